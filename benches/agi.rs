//! AGI encoding (the quoting of SET VARIABLE values) and reply parsing.

use asr_bridge::agi::reply::{Parsed, ReplyParser};
use asr_bridge::agi::{Command, Reply};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn encode(c: &mut Criterion) {
    let short = Command::SetVariable { name: "ASR_TEXT".into(), value: "안녕하세요 반갑습니다".into() };
    let nasty = Command::SetVariable { name: "ASR_TEXT".into(), value: "say \"hi\" \\ back\n".repeat(200) };
    c.bench_function("encode/set-variable-short", |b| b.iter(|| black_box(&short).to_string()));
    c.bench_function("encode/set-variable-3k-escapes", |b| b.iter(|| black_box(&nasty).to_string()));
}

fn parse(c: &mut Criterion) {
    c.bench_function("parse/200-data-endpos", |b| b.iter(|| Reply::parse_line(black_box("200 result=0 (some (data) here) endpos=123456"))));
    c.bench_function("parse/520-block", |b| {
        b.iter(|| {
            let mut p = ReplyParser::default();
            let mut n = 0;
            for l in ["520-Invalid command syntax.  Proper usage follows:", " Usage: SET VARIABLE", "520 End of proper usage."] {
                if let Parsed::Reply(_) = p.feed(black_box(l)) {
                    n += 1;
                }
            }
            n
        })
    });
}

criterion_group!(benches, encode, parse);
criterion_main!(benches);
