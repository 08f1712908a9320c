// quarry's engine in one include: arrays and files, acquisition scores, selection, diversity
// strategies, streaming over pools larger than memory, and MPI. Link quarry::engine.
//
// The active-learning loop (datasets, models, simulation, the labeling project) builds on it:
// quarry/dataset.hpp, quarry/train.hpp, quarry/loop.hpp, quarry/project.hpp; link quarry::loop.
#pragma once

#include "quarry/acquisition.hpp"  // score(): every acquisition score of a pool
#include "quarry/array.hpp"        // ArrayView, Array: typed views of host memory
#include "quarry/batchbald.hpp"    // select_batchbald(): batches by joint mutual information
#include "quarry/device.hpp"       // DeviceSpec: cpu, cuda:N or auto
#include "quarry/dist.hpp"         // Cluster: one pool over MPI ranks
#include "quarry/diversity.hpp"    // select_diverse(): BADGE, k-center, Cluster-Margin
#include "quarry/error.hpp"        // Error, UsageError
#include "quarry/io.hpp"           // NPY, NPZ, IDX readers; atomic writers
#include "quarry/pool_files.hpp"   // PoolFiles: a pool in one or many files
#include "quarry/progress.hpp"     // Progress, ProgressFn: progress of long calls
#include "quarry/select.hpp"       // select_topk(), select_power(), score_and_select()
#include "quarry/dense.hpp"        // score_dense(): segmentation maps and volumes, reduced per case or slice
#include "quarry/detections.hpp"   // score_boxes(), score_multilabel(): boxes per image, labels per sample
#include "quarry/stream.hpp"       // stream_*(): pools larger than memory, in chunks
#include "quarry/synthetic.hpp"    // synthetic pools for tests and demos
#include "quarry/version.hpp"      // build_info()
