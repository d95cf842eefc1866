//! A probe patched for a sweep's values is the probe built from scratch with them: every field
//! the probe has, every checksum mode, options and INITs that repeat, fields that share a word.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use synergy_wire::patch::{Patcher, SweepField, Variant};

fuzz_target!(|data: &[u8]| {
    let mut b = common::Bytes(data);
    let repr = common::probe(&mut b);
    let Ok((built, _)) = repr.to_bytes() else { return };
    let fields: Vec<SweepField> = SweepField::ALL
        .into_iter()
        .filter(|f| Patcher::new(&repr, &[*f]).is_ok() && b.u8() % 2 == 0)
        .collect();
    let p = Patcher::new(&repr, &fields).expect("each field located alone is located together");
    assert_eq!(p.len(), built.len());
    let mut v = Variant::default();
    for f in &fields {
        v = v.with(*f, u64::from(b.u32()) % (f.wire_max() + 1));
    }
    let mut out = vec![0u8; p.len()];
    p.write(&v, &mut out);
    assert_eq!(out, v.apply(&repr).to_bytes().expect("the same size").0, "{fields:?} {v:?}");
});
