//! Paged KV block bookkeeping: a free list, reference counts, per-sequence
//! block tables and the prefix cache.
//!
//! Only counts and ids live here; the K/V memory itself belongs to the
//! executor. A full block is identified by a hash chained over its parent's
//! hash and its token ids, so two sequences with the same first `n` blocks of
//! tokens share those blocks. Cached blocks nobody uses sit in an LRU and are
//! reused on a hit or evicted (oldest first) when space is needed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Hash of the (empty) parent of a sequence's first block.
const ROOT_HASH: u64 = 0x9e37_79b9_7f4a_7c15;

/// One sequence's blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqBlocks {
    /// Physical block of each logical block, in order.
    pub table: Vec<u32>,
    /// Chained hashes of the leading full blocks already registered in the
    /// prefix cache (or found there).
    pub hashes: Vec<u64>,
}

/// What a cached block holds, checked on every hit so a hash collision is
/// a miss rather than someone else's K/V.
#[derive(Debug, Clone)]
struct CachedBlock {
    hash: u64,
    parent: u64,
    tokens: Box<[u32]>,
}

/// Prefix-cache counters, in tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Prompt tokens looked up.
    pub queried_tokens: u64,
    /// Of those, tokens whose K/V was found in the cache.
    pub hit_tokens: u64,
    /// Cached blocks evicted to make room.
    pub evictions: u64,
}

/// The block pool.
#[derive(Debug, Clone)]
pub struct BlockManager {
    block_size: usize,
    prefix_caching: bool,
    ref_count: Vec<u32>,
    /// Unused blocks holding nothing worth keeping.
    free: Vec<u32>,
    /// What each block holds, if it is in the prefix cache.
    cached: Vec<Option<CachedBlock>>,
    by_hash: HashMap<u64, u32>,
    /// Cached blocks without users: eviction order (tick) -> block.
    lru: BTreeMap<u64, u32>,
    /// Each block's key in `lru` while it is there.
    lru_key: Vec<Option<u64>>,
    tick: u64,
    stats: PrefixCacheStats,
}

impl BlockManager {
    /// A pool of `num_blocks` blocks of `block_size` tokens.
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            block_size: block_size.max(1),
            prefix_caching,
            ref_count: vec![0; num_blocks],
            // Popped from the end: low ids first, which keeps tests readable.
            free: (0..num_blocks as u32).rev().collect(),
            cached: vec![None; num_blocks],
            by_hash: HashMap::new(),
            lru: BTreeMap::new(),
            lru_key: vec![None; num_blocks],
            tick: 0,
            stats: PrefixCacheStats::default(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// All blocks.
    pub fn num_blocks(&self) -> usize {
        self.ref_count.len()
    }

    /// Blocks that can be handed out now (free or evictable).
    pub fn num_free(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// Cached blocks without users.
    pub fn num_evictable(&self) -> usize {
        self.lru.len()
    }

    /// Whether the prefix cache is on.
    pub fn prefix_caching(&self) -> bool {
        self.prefix_caching
    }

    /// Prefix-cache counters so far.
    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Finds the longest cached prefix of `tokens` in whole blocks and takes
    /// a reference on each block found; `seq` must hold no blocks yet.
    /// Returns the number of tokens whose K/V is now in `seq`'s table.
    pub fn acquire_prefix(&mut self, seq: &mut SeqBlocks, tokens: &[u32]) -> usize {
        debug_assert!(
            seq.table.is_empty(),
            "acquire_prefix on a sequence with blocks"
        );
        if !self.prefix_caching {
            return 0;
        }
        self.stats.queried_tokens += tokens.len() as u64;
        let mut parent = ROOT_HASH;
        for chunk in tokens.chunks_exact(self.block_size) {
            let hash = chain_hash(parent, chunk);
            let Some(&block) = self.by_hash.get(&hash) else {
                break;
            };
            let matches = self.cached[block as usize]
                .as_ref()
                .is_some_and(|c| c.parent == parent && *c.tokens == *chunk);
            if !matches {
                break;
            }
            self.take_ref(block);
            seq.table.push(block);
            seq.hashes.push(hash);
            parent = hash;
        }
        let hit = seq.table.len() * self.block_size;
        self.stats.hit_tokens += hit as u64;
        hit
    }

    /// Grows `seq`'s table to cover `total_tokens`; all or nothing. Returns
    /// false (and changes nothing) when not enough blocks are free.
    pub fn allocate(&mut self, seq: &mut SeqBlocks, total_tokens: usize) -> bool {
        let need = self
            .blocks_for(total_tokens)
            .saturating_sub(seq.table.len());
        if need > self.num_free() {
            return false;
        }
        for _ in 0..need {
            let block = match self.free.pop() {
                Some(b) => b,
                None => self.evict_oldest(),
            };
            self.ref_count[block as usize] = 1;
            seq.table.push(block);
        }
        true
    }

    /// Registers `seq`'s full blocks among `tokens[..computed]` in the prefix
    /// cache, so later sequences can share them.
    pub fn register_full_blocks(&mut self, seq: &mut SeqBlocks, tokens: &[u32], computed: usize) {
        if !self.prefix_caching {
            return;
        }
        let full = (computed / self.block_size).min(seq.table.len());
        while seq.hashes.len() < full {
            let i = seq.hashes.len();
            let parent = seq.hashes.last().copied().unwrap_or(ROOT_HASH);
            let chunk = &tokens[i * self.block_size..(i + 1) * self.block_size];
            let hash = chain_hash(parent, chunk);
            let block = seq.table[i];
            // A block someone else computed first stays the cached one; ours
            // remains private and returns to the free list when released.
            if self.cached[block as usize].is_none() && !self.by_hash.contains_key(&hash) {
                self.by_hash.insert(hash, block);
                self.cached[block as usize] = Some(CachedBlock {
                    hash,
                    parent,
                    tokens: chunk.into(),
                });
            }
            seq.hashes.push(hash);
        }
    }

    /// Releases every block of `seq` and empties it. Cached blocks go to the
    /// LRU, last block first so a prefix outlives its tail.
    pub fn release(&mut self, seq: &mut SeqBlocks) {
        for &block in seq.table.iter().rev() {
            let b = block as usize;
            debug_assert!(self.ref_count[b] > 0, "release of an unreferenced block");
            self.ref_count[b] = self.ref_count[b].saturating_sub(1);
            if self.ref_count[b] == 0 {
                if self.cached[b].is_some() {
                    self.tick += 1;
                    self.lru.insert(self.tick, block);
                    self.lru_key[b] = Some(self.tick);
                } else {
                    self.free.push(block);
                }
            }
        }
        seq.table.clear();
        seq.hashes.clear();
    }

    /// References on `block`.
    pub fn ref_count(&self, block: u32) -> u32 {
        self.ref_count[block as usize]
    }

    fn take_ref(&mut self, block: u32) {
        let b = block as usize;
        if self.ref_count[b] == 0 {
            if let Some(key) = self.lru_key[b].take() {
                self.lru.remove(&key);
            }
        }
        self.ref_count[b] += 1;
    }

    /// Drops the least recently released cached block from the cache and
    /// returns it. Callers check `num_free()` first.
    fn evict_oldest(&mut self) -> u32 {
        let Some((_, block)) = self.lru.pop_first() else {
            unreachable!("evict_oldest with an empty LRU; callers check num_free first");
        };
        self.lru_key[block as usize] = None;
        if let Some(c) = self.cached[block as usize].take() {
            self.by_hash.remove(&c.hash);
        }
        self.stats.evictions += 1;
        block
    }

    /// Checks every invariant against the sequences that hold blocks; the
    /// property tests call it after each operation.
    pub fn check_invariants<'a>(
        &self,
        seqs: impl IntoIterator<Item = &'a SeqBlocks>,
    ) -> Result<(), String> {
        let n = self.num_blocks();
        let mut refs = vec![0u32; n];
        for s in seqs {
            let mut seen = std::collections::HashSet::new();
            for &b in &s.table {
                if b as usize >= n {
                    return Err(format!("block {b} out of range"));
                }
                if !seen.insert(b) {
                    return Err(format!("block {b} twice in one table"));
                }
                refs[b as usize] += 1;
            }
            if s.hashes.len() > s.table.len() {
                return Err("more hashes than blocks".into());
            }
        }
        let mut place = vec![0u8; n];
        for &b in &self.free {
            place[b as usize] += 1;
        }
        for &b in self.lru.values() {
            place[b as usize] += 1;
        }
        for b in 0..n {
            if refs[b] != self.ref_count[b] {
                return Err(format!(
                    "block {b}: ref count {} but {} tables hold it",
                    self.ref_count[b], refs[b]
                ));
            }
            if refs[b] > 1 && self.cached[b].is_none() {
                return Err(format!("block {b} shared but not in the prefix cache"));
            }
            let expected = u8::from(refs[b] == 0);
            if place[b] != expected {
                return Err(format!(
                    "block {b}: {} refs but {} places in free/LRU",
                    refs[b], place[b]
                ));
            }
            if let Some(c) = &self.cached[b] {
                if self.by_hash.get(&c.hash) != Some(&(b as u32)) {
                    return Err(format!("block {b} cached but not indexed"));
                }
            }
            if self.lru_key[b].is_some() != self.lru.values().any(|&x| x as usize == b) {
                return Err(format!("block {b}: LRU key out of step"));
            }
        }
        if self.by_hash.len() != self.cached.iter().flatten().count() {
            return Err("hash index and cached blocks disagree".into());
        }
        Ok(())
    }
}

/// Hash of a block given its parent's hash and its token ids.
fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_is_all_or_nothing_and_release_frees() {
        let mut bm = BlockManager::new(4, 4, false);
        let mut a = SeqBlocks::default();
        assert!(bm.allocate(&mut a, 9));
        assert_eq!(a.table.len(), 3);
        let mut b = SeqBlocks::default();
        assert!(!bm.allocate(&mut b, 8));
        assert!(b.table.is_empty());
        assert_eq!(bm.num_free(), 1);
        bm.release(&mut a);
        assert_eq!(bm.num_free(), 4);
        bm.check_invariants([&a, &b]).unwrap();
    }

    #[test]
    fn shared_prefix_hits_and_lru_eviction() {
        let mut bm = BlockManager::new(4, 2, true);
        let tokens = [1, 2, 3, 4, 5];
        let mut a = SeqBlocks::default();
        assert_eq!(bm.acquire_prefix(&mut a, &tokens[..4]), 0);
        assert!(bm.allocate(&mut a, 5));
        bm.register_full_blocks(&mut a, &tokens, 5);
        let mut b = SeqBlocks::default();
        assert_eq!(bm.acquire_prefix(&mut b, &tokens[..4]), 4);
        assert_eq!(b.table, a.table[..2]);
        assert_eq!(bm.ref_count(a.table[0]), 2);
        bm.check_invariants([&a, &b]).unwrap();
        bm.release(&mut a);
        bm.release(&mut b);
        // Two cached blocks wait in the LRU; all four are available.
        assert_eq!(bm.num_evictable(), 2);
        assert_eq!(bm.num_free(), 4);
        let mut c = SeqBlocks::default();
        assert_eq!(bm.acquire_prefix(&mut c, &[1, 2, 9, 9]), 2);
        // Needs 3 more: the free ones first, then the evicted [3, 4] block.
        assert!(bm.allocate(&mut c, 8));
        assert_eq!(bm.stats().evictions, 1);
        let mut d = SeqBlocks::default();
        assert_eq!(bm.acquire_prefix(&mut d, &tokens[..4]), 2);
        bm.check_invariants([&c, &d]).unwrap();
    }

    #[test]
    fn prefix_caching_off_never_hits() {
        let mut bm = BlockManager::new(4, 2, false);
        let mut a = SeqBlocks::default();
        assert!(bm.allocate(&mut a, 4));
        bm.register_full_blocks(&mut a, &[1, 2, 3, 4], 4);
        let mut b = SeqBlocks::default();
        assert_eq!(bm.acquire_prefix(&mut b, &[1, 2, 3, 4]), 0);
        bm.release(&mut a);
        assert_eq!(bm.num_evictable(), 0);
        bm.check_invariants([&a, &b]).unwrap();
    }
}
