// Exact top-k by radix select on unique 64-bit composite keys: the backend-independent parts of
// the CUDA top-k (kernels/topk.cu), shared with its host emulation (tests/test_radix_select.cpp).
//
// Each selectable score x at index i gets the composite
//     c = (order_key(x) << 32) | (0xFFFFFFFF - i)          (needs n < 2^32)
// and an excluded index gets 0. Composites are unique, every selectable one is > 0, and a larger
// composite ranks higher (score descending, then index ascending; -0 == +0): the k largest
// composites are exactly the top-k with the tie rule built in.
//
// The select runs over digits of the composite from the top (kPasses passes, digit_shift/
// digit_bits). Before pass p, the state holds the digits chosen so far (`prefix`, the
// composite's bits above digit_shift(p - 1)), how many composites share it (`candidates`) and
// the rank within them of the k-th largest composite (`k_rem`). A pass histograms the digit
// of the candidates; radix_step picks the bucket that holds rank k_rem counting from the top
// and extends the prefix. When the chosen bucket holds exactly k_rem candidates, all of them are
// in the answer and the select stops: the answer is {c >= prefix << shift}, exactly k
// composites. Composites being unique, it stops at the latest after the last digit.
#pragma once

#include <cstdint>
#include <vector>

#include "quarry/detail/hd.hpp"

namespace quarry::detail::radix {

/// Digits from the top: 11, 11, 10 bits of the score key, then 11, 11, 10 of the index part.
constexpr int kPasses = 6;
constexpr int kMaxDigitBits = 11;
constexpr int kMaxBuckets = 1 << kMaxDigitBits;
/// A pass copies the candidates into a compact buffer (later passes read only those) when
/// they are at most 1/kCompactRatio of what the pass reads.
constexpr std::uint64_t kCompactRatio = 16;
/// No NaN seen (the initial value of the NaN word; indices are < n <= 0xFFFFFFFF).
constexpr std::uint32_t kNoNan = 0xFFFFFFFFu;
/// Largest pool: indices must fit the low 32 bits of the composite.
constexpr std::uint64_t kMaxN = 0xFFFFFFFFull;

QUARRY_HD int digit_shift(int pass) {
  // 53 + 11 = 64, 42 + 11 = 53, 32 + 10 = 42, 21 + 11 = 32, 10 + 11 = 21, 0 + 10 = 10
  return pass == 0 ? 53 : pass == 1 ? 42 : pass == 2 ? 32 : pass == 3 ? 21 : pass == 4 ? 10 : 0;
}
QUARRY_HD int digit_bits(int pass) { return (pass == 2 || pass == 5) ? 10 : 11; }

/// Larger float -> larger key; -0 and +0 map to the same key (as cpu::topk's order_key).
/// Every non-NaN float has a key >= order_key(-inf) = 0x007FFFFF.
QUARRY_HD std::uint32_t order_key(float x) {
  const std::uint32_t b = float_to_bits(x == 0.0f ? 0.0f : x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/// The composite of score x at index i (i < 2^32); 0 when excluded.
QUARRY_HD std::uint64_t composite(float x, std::uint32_t index, bool excluded) {
  const std::uint64_t c =
      (static_cast<std::uint64_t>(order_key(x)) << 32) | static_cast<std::uint64_t>(0xFFFFFFFFu - index);
  return excluded ? 0 : c;
}

/// The pool index of a composite.
QUARRY_HD std::uint32_t decode_index(std::uint64_t c) {
  return 0xFFFFFFFFu - static_cast<std::uint32_t>(c & 0xFFFFFFFFull);
}

/// c >> shift, 0 for shift 64 (the empty prefix before pass 0).
QUARRY_HD std::uint64_t high_bits(std::uint64_t c, int shift) { return shift >= 64 ? 0 : c >> shift; }

/// The `bits`-bit digit of c at `shift`.
QUARRY_HD std::uint32_t digit_at(std::uint64_t c, int shift, int bits) {
  return static_cast<std::uint32_t>((c >> shift) & ((1ull << bits) - 1));
}
/// The digit of pass `pass`, in [0, 2^digit_bits(pass)).
QUARRY_HD std::uint32_t digit(std::uint64_t c, int pass) {
  return digit_at(c, digit_shift(pass), digit_bits(pass));
}

/// Bit i of an exclusion bitmask (word i / 32, bit i % 32).
QUARRY_HD bool excluded_bit(const std::uint32_t* words, std::uint64_t i) {
  return words != nullptr && ((words[i >> 5] >> (i & 31)) & 1u) != 0;
}

/// Where a composite stands against the prefix of the digits chosen so far.
enum Role : int { kBelow = 0, kCandidate = 1, kAbove = 2 };
QUARRY_HD int role(std::uint64_t c, int prefix_shift, std::uint64_t prefix) {
  const std::uint64_t h = high_bits(c, prefix_shift);
  return h == prefix ? kCandidate : (h > prefix ? kAbove : kBelow);
}

/// The state of a select between passes.
struct State {
  int pass;                  // the next pass to run
  int prefix_shift;          // prefix = composite >> prefix_shift (64: nothing chosen yet)
  std::uint64_t prefix;      // the digits chosen so far
  std::uint64_t candidates;  // composites that share the prefix (at the start: n)
  std::uint64_t k_rem;       // rank, among the candidates from the top, of the k-th largest
  bool done;
  std::uint64_t threshold;   // when done: the answer is exactly the composites >= threshold
};

QUARRY_HD State start(std::uint64_t n, std::uint64_t k) { return State{0, 64, 0, n, k, false, 0}; }

/// Whether the next pass should copy its candidates (state.candidates of them) into a compact
/// buffer, given that it reads `source_size` composites. Never in pass 0 (all are candidates).
QUARRY_HD bool compacts(const State& s, std::uint64_t source_size) {
  return s.pass > 0 && s.candidates * kCompactRatio <= source_size;
}

/// The bucket holding rank `need` (1-based, counting from the highest bucket down) of a
/// histogram; *above gets the count of the buckets above it. -1 when the histogram holds fewer
/// than `need`.
QUARRY_HD int choose_bucket(const std::uint32_t* hist, int buckets, std::uint64_t need,
                            std::uint64_t* above) {
  std::uint64_t acc = 0;
  for (int b = buckets - 1; b >= 0; --b) {
    if (acc + hist[b] >= need) {
      *above = acc;
      return b;
    }
    acc += hist[b];
  }
  *above = acc;
  return -1;
}

/// Advances the state with the histogram of the pass just run (2^digit_bits(s.pass) buckets).
/// Returns false when an invariant is broken (fewer candidates than k_rem, or no stop after
/// the last digit): an internal error.
QUARRY_HD bool step(State& s, const std::uint32_t* hist) {
  if (s.done || s.pass >= kPasses) return false;
  const int bits = digit_bits(s.pass), shift = digit_shift(s.pass);
  std::uint64_t above = 0;
  const int b = choose_bucket(hist, 1 << bits, s.k_rem, &above);
  if (b < 0) return false;
  s.k_rem -= above;
  s.candidates = hist[b];
  s.prefix = (s.prefix << bits) | static_cast<std::uint64_t>(b);
  s.prefix_shift = shift;
  ++s.pass;
  if (s.candidates == s.k_rem) {  // the whole bucket is in: stop
    s.done = true;
    s.threshold = s.prefix << shift;
    return true;
  }
  return s.pass < kPasses;  // unique composites: the last digit always stops
}

/// Selectable composites counted by the histogram of pass 0: all but bucket 0, which holds the
/// excluded (composite 0) and nothing else (a non-NaN key >= 0x007FFFFF puts a selectable
/// composite in bucket >= 3).
QUARRY_HD std::uint64_t selectable_in_pass0(const std::uint32_t* hist) {
  std::uint64_t total = 0;
  for (int b = 1; b < (1 << digit_bits(0)); ++b) total += hist[b];
  return total;
}

/// The device bitmask of an exclusion mask as cpu::topk takes it (mask[i] != 0: excluded);
/// empty for an empty mask.
inline std::vector<std::uint32_t> exclusion_bitmask(const std::vector<std::uint8_t>& mask) {
  std::vector<std::uint32_t> words((mask.size() + 31) / 32, 0u);
  for (std::size_t i = 0; i < mask.size(); ++i)
    if (mask[i]) words[i >> 5] |= 1u << (i & 31);
  return words;
}

}  // namespace quarry::detail::radix
