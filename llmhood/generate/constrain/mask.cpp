// The tokens a DFA state accepts whole, in one walk of the token trie.
//
// The walk of mask.py's `python_mask`, written out: nodes are visited in preorder, each
// node's state is its parent's state stepped by the node's last byte, and a node whose state
// is dead skips its whole subtree (no token that starts with a refused prefix can be
// consumed). The parent's state is found by depth: in preorder the last node visited at
// depth d - 1 is the parent of the current node at depth d, so one state per depth is all the
// walk keeps. vocab.py describes the trie's arrays.

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

void token_mask(const at::Tensor& transitions, const at::Tensor& byte, const at::Tensor& depth,
                const at::Tensor& subtree_end, const at::Tensor& token_start,
                const at::Tensor& token_ids, int64_t max_depth, int64_t state,
                const at::Tensor& out) {
  TORCH_CHECK(transitions.scalar_type() == at::kInt && transitions.is_contiguous() &&
                  transitions.dim() == 2 && transitions.size(1) == 256,
              "transitions must be a contiguous (states, 256) int32 tensor");
  TORCH_CHECK(byte.scalar_type() == at::kByte && depth.scalar_type() == at::kInt &&
                  subtree_end.scalar_type() == at::kInt &&
                  token_start.scalar_type() == at::kInt && token_ids.scalar_type() == at::kInt,
              "the trie's arrays are uint8 (byte) and int32 (the others)");
  TORCH_CHECK(out.scalar_type() == at::kBool && out.is_contiguous(), "out must be contiguous bool");
  TORCH_CHECK(state >= 0 && state < transitions.size(0), "state out of range");
  const int32_t* table = transitions.data_ptr<int32_t>();
  const uint8_t* bytes = byte.data_ptr<uint8_t>();
  const int32_t* depths = depth.data_ptr<int32_t>();
  const int32_t* ends = subtree_end.data_ptr<int32_t>();
  const int32_t* starts = token_start.data_ptr<int32_t>();
  const int32_t* ids = token_ids.data_ptr<int32_t>();
  bool* allowed = out.data_ptr<bool>();
  const int64_t nodes = byte.size(0);
  std::fill(allowed, allowed + out.numel(), false);

  if (state == 0) return;  // the dead state accepts nothing
  std::vector<int32_t> at_depth(max_depth + 1);  // the state after the prefix at each depth
  at_depth[0] = int32_t(state);
  int64_t n = 1;
  while (n < nodes) {
    const int32_t next = table[int64_t(at_depth[depths[n] - 1]) * 256 + bytes[n]];
    if (next == 0) {
      n = ends[n];
      continue;
    }
    at_depth[depths[n]] = next;
    for (int32_t t = starts[n]; t < starts[n + 1]; ++t) allowed[ids[t]] = true;
    ++n;
  }
}

}  // namespace

TORCH_LIBRARY(llmhood_constrain, m) {
  m.def(
      "token_mask(Tensor transitions, Tensor byte, Tensor depth, Tensor subtree_end, "
      "Tensor token_start, Tensor token_ids, int max_depth, int state, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(llmhood_constrain, CPU, m) { m.impl("token_mask", &token_mask); }
