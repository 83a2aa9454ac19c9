//! Splits gzip files as a backup with gzip content does, rebuilds them as a restore does,
//! and reports, per file: pieces, whether the whole stream is re-created, plaintext and
//! recipe sizes, and the time each way.
//!
//!   gzip-probe FILE.gz...

use std::io::Read;
use std::time::Instant;

use stowage_engine::gzip::{header_len, split, Ending, Rebuilder, Recipe, HEADER_MAX};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        return Err("usage: gzip-probe FILE.gz...".into());
    }
    println!(
        "file\tcompressed\tpieces\tre-created\tplain\trecipe\tsplit MB/s\trebuild MB/s\tending"
    );
    for file in files {
        let gz = std::fs::read(&file)?;
        let Some(h) = header_len(&gz[..gz.len().min(HEADER_MAX)]) else {
            println!("{file}\t{}\tnot gzip", gz.len());
            continue;
        };
        let started = Instant::now();
        let mut input = &gz[h..];
        let (plain, pieces, ending, unchecked) = split(&mut input, |checked| {
            let mut plain = Vec::new();
            checked.read_to_end(&mut plain).map(|_| plain)
        })?;
        let plain = plain?;
        let split_secs = started.elapsed().as_secs_f64();
        let tail = [&unchecked[..], input].concat();
        let recipe = Recipe {
            header: gz[..h].to_vec(),
            pieces,
        };
        let (count, recreated, recipe_len) = (
            recipe.pieces.len(),
            recipe.compressed_len(),
            recipe.encode().len(),
        );
        let started = Instant::now();
        let mut out = recipe.header.clone();
        let mut write = |b: &[u8]| {
            out.extend_from_slice(b);
            Ok(())
        };
        let mut rebuild = Rebuilder::new(recipe, file.clone());
        rebuild.push(&plain, &mut write)?;
        rebuild.finish(&mut write)?;
        let rebuilt = started.elapsed().as_secs_f64();
        out.extend_from_slice(&tail);
        if out != gz {
            return Err(format!("{file}: rebuilt bytes differ").into());
        }
        let mb = plain.len() as f64 / 1e6;
        let ending = match ending {
            Ending::Complete => "complete".to_string(),
            Ending::Failed(why) => format!("stopped: {why}"),
        };
        println!(
            "{file}\t{}\t{count}\t{:.1}%\t{}\t{recipe_len}\t{:.1}\t{:.1}\t{ending}",
            gz.len(),
            100.0 * recreated as f64 / gz.len() as f64,
            plain.len(),
            mb / split_secs,
            mb / rebuilt,
        );
    }
    Ok(())
}
