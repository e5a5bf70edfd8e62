//! Seeded randomness. Every draw in ssod comes from a `ChaCha8Rng` seeded from the run seed and a
//! stream name, so adding a new consumer of randomness never shifts the draws of another.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The generator for `stream` under `seed` (e.g. `rng_for(seed, "augment/mosaic")`).
pub fn rng_for(seed: u64, stream: &str) -> ChaCha8Rng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(stream.as_bytes());
    let digest = h.finalize();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest);
    ChaCha8Rng::from_seed(key)
}
