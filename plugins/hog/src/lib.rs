//! `hog`: allocates 1 MiB blocks forever; exercises weir's per-plugin memory limit.

use weir_sdk::{HandlerError, Message, Outcome};

const MIB: usize = 1 << 20;

fn handle(_msg: Message) -> Result<Outcome, HandlerError> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        // Non-zero bytes so every page is really written, not just reserved.
        let block = vec![0xAB_u8; MIB];
        blocks.push(block);
        std::hint::black_box(&blocks);
    }
}

weir_sdk::handler!(handle);
