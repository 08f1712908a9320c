// Links the installed quarry::engine, scores a tiny pool and selects from it.
#include <quarry/quarry.hpp>

#include <cstdio>
#include <vector>

int main() {
  const std::vector<float> p = {0.9f, 0.1f, 0.5f, 0.5f, 0.7f, 0.3f};  // [3, 2]
  const quarry::ArrayView v{p.data(), quarry::DType::f32, {3, 2}};
  const std::vector<float> s = quarry::score(v, quarry::Acquisition::entropy);
  const quarry::Selection sel = quarry::select_topk(s.data(), 3, 2);
  std::printf("quarry %s top: %lld %lld\n", quarry::build_info().version.c_str(),
              static_cast<long long>(sel.index[0]), static_cast<long long>(sel.index[1]));
  return sel.index[0] == 1 && sel.index[1] == 2 ? 0 : 1;
}
