//! Property tests: random ranges, buffer offsets, block sizes, MDTS and queue sizes.

use nvme_direct::emu::{EmuConfig, Emulator};
use nvme_direct::{BlockRange, Config, Controller, DmaBuffer, DmaMemory};
use proptest::prelude::*;

fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn reads_match_image_and_leave_surroundings(
        big_blocks in any::<bool>(),
        mdts in 0u8..6,
        qsize in 2u16..64,
        qd in 1usize..80,
        start_frac in 0.0f64..1.0,
        len_frac in 0.0f64..1.0,
        off_words in 0usize..3000,
        seed in any::<u64>(),
        deferred in any::<bool>(),
    ) {
        let bs: usize = if big_blocks { 4096 } else { 512 };
        let img_len = 6 << 20;
        let img = image(img_len, seed);
        let emu = Emulator::new(EmuConfig { block_size: bs as u32, mdts, deferred, ..Default::default() }, img.clone());
        let conf = Config { io_queue_size: qsize, max_transfer: 4 << 20, ..Default::default() };
        let mut c = Controller::new(emu.clone(), emu.clone(), conf).unwrap();
        let ns = c.namespace(1).unwrap();
        let total = ns.size_blocks;
        let lba = ((total as f64) * start_frac) as u64 % total;
        // 512 B .. several MiB.
        let blocks = 1 + (((total - lba) as f64) * len_frac * len_frac) as u64 % (total - lba);
        let off = off_words * 4;
        let bytes = blocks as usize * bs;
        let mut buf = c.memory().alloc(off + bytes + 64).unwrap();
        let fill = vec![0xa5u8; buf.len()];
        buf.write_bytes(0, &fill).unwrap();
        c.read(0, &ns, BlockRange { lba, blocks }, &mut buf, off, qd).unwrap();
        let mut got = vec![0u8; buf.len()];
        buf.read_bytes(0, &mut got).unwrap();
        let s = lba as usize * bs;
        prop_assert!(got[off..off + bytes] == img[s..s + bytes]);
        prop_assert!(got[..off].iter().all(|&b| b == 0xa5));
        prop_assert!(got[off + bytes..].iter().all(|&b| b == 0xa5));
    }
}
