pub mod certs;
pub mod check;
pub mod cluster;
pub mod demo;
pub mod plan;
pub mod replica;
pub mod signals;
pub mod sim;
