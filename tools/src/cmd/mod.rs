pub mod check;
pub mod sim;
