//! The standalone SLIM node.
fn main() {}
