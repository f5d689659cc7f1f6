use quiver_plugin_sdk::prelude::*;

#[derive(Default)]
struct NotOne;

register_partitioner!(NotOne);

fn main() {}
