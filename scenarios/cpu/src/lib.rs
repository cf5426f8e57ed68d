//! CPU-bound iterations with no I/O, for the benchmark of the sandbox's
//! own cost: a sieve over a 1 MiB table (memory-bound: every store is a
//! bounds check unless the memory layout makes it unnecessary, every loop
//! an interruption check) and a multiply-xor hash of 2 million steps
//! (arithmetic). `PART=sieve` or `PART=hash` runs one half alone.

fn iteration() -> guest_sdk::Result {
    let part = guest_sdk::vu::env_or("PART", "both");
    const N: usize = 1 << 20;
    let mut sieve = vec![true; if part == "hash" { 4 } else { N }];
    let n = sieve.len();
    let mut i = 2;
    while i * i < n {
        if sieve[i] {
            let mut j = i * i;
            while j < n {
                sieve[j] = false;
                j += i;
            }
        }
        i += 1;
    }
    let primes = sieve.iter().filter(|&&p| p).count() as u64;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let rounds = if part == "sieve" { 0 } else { 2_000_000u64 };
    for k in 0..rounds {
        h = (h ^ k).wrapping_mul(0x100_0000_01b3);
    }
    std::hint::black_box((primes, h));
    Ok(())
}

guest_sdk::main!(iteration);
