//! Splits gzip files as a backup with gzip content does, rebuilds them as a restore does,
//! and reports, per file: pieces, whether the whole stream is re-created, plaintext and
//! recipe sizes, and the time each way.
//!
//!   gzip-probe FILE.gz...

use std::io::Read;
use std::time::Instant;

use stowage_engine::gzip::{header_len, Ending, Rebuilder, Recipe, Splitter, HEADER_MAX};

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
        let mut splitter = Splitter::new(&gz[h..]);
        let mut plain = Vec::new();
        splitter.read_to_end(&mut plain)?;
        let split = started.elapsed().as_secs_f64();
        let (pieces, ending, mut rest) = splitter.finish();
        let mut tail = Vec::new();
        rest.read_to_end(&mut tail)?;
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
            mb / split,
            mb / rebuilt,
        );
    }
    Ok(())
}
