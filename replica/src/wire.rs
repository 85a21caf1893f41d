pub mod pb {
    //! Generated protobuf and gRPC code.
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("meridian.v1");
}
