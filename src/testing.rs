//! Helpers for the crate's unit tests.

/// xorshift64: a small deterministic generator, so that a failing generated case repeats.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

impl Rng {
    /// A copy of `frame` damaged one to four times: a byte replaced, a bit flipped, a byte
    /// inserted, or the end cut off.
    pub(crate) fn damaged(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut f = frame.to_vec();
        for _ in 0..1 + self.below(4) {
            match self.below(4) {
                0 if !f.is_empty() => {
                    let i = self.below(f.len());
                    f[i] = self.next() as u8;
                }
                1 if !f.is_empty() => {
                    let i = self.below(f.len());
                    f[i] ^= 1 << self.below(8);
                }
                2 => {
                    let i = self.below(f.len() + 1);
                    f.insert(i, self.next() as u8);
                }
                _ => f.truncate(self.below(f.len() + 1)),
            }
        }
        f
    }

    /// How many of `rounds` damaged copies of `samples` (each picked at random) `read` accepts.
    pub(crate) fn count_read(&mut self, samples: &[Vec<u8>], rounds: usize, read: impl Fn(&[u8]) -> bool) -> usize {
        (0..rounds)
            .filter(|_| {
                let i = self.below(samples.len());
                read(&self.damaged(&samples[i]))
            })
            .count()
    }
}
