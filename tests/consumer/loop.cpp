// Links the installed quarry::loop: a synthetic image dataset, a label journal, and the engine
// beneath them (quarry::loop brings quarry::engine).
#include <quarry/dataset.hpp>
#include <quarry/project.hpp>
#include <quarry/quarry.hpp>
#include <quarry/train.hpp>

#include <cstdio>

int main() {
  const quarry::Dataset d = quarry::synthetic_images(64, 1);
  const quarry::ModelSpec m = quarry::parse_model_spec("mlp");
  std::printf("quarry %s: %s, model %s, torch %s\n", quarry::build_info().version.c_str(),
              d.describe().c_str(), quarry::model_spec_string(m).c_str(), quarry::have_torch() ? "yes" : "no");
  return d.train.size() > 0 && d.num_classes >= 2 ? 0 : 1;
}
