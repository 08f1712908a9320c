// Dense outputs in files (quarry::DenseFiles) and their streamed scoring: one array read a group
// of cases at a time, or one file per case (NIfTI, nnU-Net .npz).
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "io/files.hpp"
#include "io/mmap_file.hpp"
#include "quarry/dense.hpp"
#include "quarry/error.hpp"
#include "quarry/io.hpp"

namespace quarry {
namespace {

bool ends_with(const std::string& s, const char* tail) {
  const std::size_t n = std::strlen(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

bool is_case_file(const std::string& path) {
  return is_nifti_path(path) || ends_with(path, ".npz") || npz_member_spec(path);
}

// A case file as [1, C, spatial...] (a mask file: [1, spatial...]).
Array read_case_file(const std::string& path, bool mask) {
  if (npz_member_spec(path)) {  // ARCHIVE.npz:MEMBER, the member named
    Array a = read_array(path);
    std::vector<std::int64_t> shape = a.shape();
    QUARRY_EXPECTS(shape.size() >= (mask ? 1u : 2u), path, ": expected ",
                   mask ? "a mask [spatial...]" : "probabilities [C, spatial...]", ", got shape ", shape_string(shape));
    shape.insert(shape.begin(), 1);
    return Array(std::make_shared<Array>(a), a.data(), a.dtype(), shape, path);
  }
  if (ends_with(path, ".npz")) {
    const std::vector<std::string> members = npz_members(path);
    std::string member;
    if (std::find(members.begin(), members.end(), "probabilities") != members.end()) {
      member = "probabilities";
    } else if (members.size() == 1) {
      member = members.front();
    } else {
      QUARRY_FAIL(path, ": expected a member 'probabilities' (nnU-Net --save_probabilities) or a single member; members: ",
                  io::join_names(members));
    }
    Array a = read_npz_member(path, member);
    std::vector<std::int64_t> shape = a.shape();
    QUARRY_EXPECTS(shape.size() >= (mask ? 1u : 2u), path, ":", member, ": expected ",
                   mask ? "a mask [spatial...]" : "probabilities [C, spatial...]", ", got shape ", shape_string(shape));
    shape.insert(shape.begin(), 1);
    return Array(std::make_shared<Array>(a), a.data(), a.dtype(), shape, path);
  }
  Array a = read_nifti(path);  // [.., z, y, x] (NIfTI axes reversed)
  std::vector<std::int64_t> shape = a.shape();
  if (mask) {
    // A mask is the grid itself: any trailing size-1 NIfTI dims (t, u) are leading here.
    while (shape.size() > 1 && shape.front() == 1) shape.erase(shape.begin());
  } else {
    // (x, y, z, C) -> [C, z, y, x]; (x, y, z, 1, C) -> [C, 1, z, y, x] -> [C, z, y, x].
    QUARRY_EXPECTS(shape.size() >= 4 && shape.size() <= 5, path, ": a NIfTI probability map holds its classes along ",
                   "the 4th dimension (or the 5th, the 4th being 1); this one has dims ", [&] {
                     std::vector<std::int64_t> d(shape.rbegin(), shape.rend());
                     return shape_string(d);
                   }());
    if (shape.size() == 5) {
      QUARRY_EXPECTS(shape[1] == 1, path, ": dims 4 and 5 are both > 1 (", shape[1], ", ", shape[0],
                     "): expected the classes along one of them");
      shape.erase(shape.begin() + 1);
    }
  }
  shape.insert(shape.begin(), 1);
  return Array(std::make_shared<Array>(a), a.data(), a.dtype(), shape, path);
}

}  // namespace

DenseFiles DenseFiles::open(const std::string& spec, bool committee, bool masks) {
  DenseFiles f;
  f.spec_ = spec;
  f.masks_ = masks;
  f.committee_ = committee;
  const std::vector<std::string> paths = expand_spec(spec);
  // One FILE.npz:MEMBER alone is one array of all cases; in a list, each names one case.
  const bool case_files = std::all_of(paths.begin(), paths.end(), [&](const std::string& p) {
    return is_case_file(p) && (paths.size() > 1 || !npz_member_spec(p));
  });
  if (case_files && (paths.size() > 1 || is_nifti_path(paths.front()) || ends_with(paths.front(), ".npz"))) {
    QUARRY_USAGE_EXPECTS(!committee, spec, ": case files hold one model's output; a committee is one array [M, N, C, ...]");
    // A case scored twice: a file named twice (or through a link), or the same member twice.
    std::vector<std::string> files;
    for (const std::string& p : paths) {
      if (npz_member_spec(p)) {
        expect_regular_file(p.substr(0, p.rfind(':')));
        QUARRY_USAGE_EXPECTS(std::count(paths.begin(), paths.end(), p) == 1, spec, ": ", p,
                             " is named twice; each case may be listed once");
      } else {
        expect_regular_file(p);
        files.push_back(p);
      }
    }
    expect_distinct_files(files, spec, masks ? "mask file" : "case file");
    f.paths_ = paths;
    f.cases_ = static_cast<std::int64_t>(paths.size());
    return f;
  }
  QUARRY_EXPECTS(paths.size() == 1, spec, ": several files are read as one per case, and only NIfTI (.nii, .nii.gz) ",
                 "and nnU-Net .npz files hold one case; concatenate arrays of several cases into one");
  const std::string& path = paths.front();
  if (!npz_member_spec(path) && !is_nifti_path(path) && detect_file_kind(path) == FileKind::npy) {
    // Pages may leave memory (release) only where the data lies in the file mapping: an NPY
    // whose data parse_npy copied (misaligned, widened) is heap memory.
    io::MappedFile m = io::map_file(path);
    const unsigned char* base = m.data;
    const std::size_t size = m.size;
    f.whole_ = parse_npy(std::move(m.owner), base, size, path);
    const auto* d = static_cast<const unsigned char*>(f.whole_.data());
    f.mapped_ = d >= base && d < base + size;
  } else {
    f.whole_ = read_array(path);
  }
  const int lead = committee ? 2 : 1;
  QUARRY_EXPECTS(f.whole_.rank() >= lead + 1, spec, ": expected ",
                 masks ? "[N, spatial...]" : committee ? "[M, N, C, spatial...]" : "[N, C, spatial...]",
                 ", got shape ", shape_string(f.whole_.shape()));
  f.cases_ = f.whole_.shape()[static_cast<std::size_t>(lead - 1)];
  return f;
}

std::string DenseFiles::case_name(std::int64_t i) const {
  return one_array() ? spec_ + "[" + std::to_string(i) + "]" : paths_[static_cast<std::size_t>(i)];
}

std::size_t DenseFiles::case_bytes(std::int64_t i) const {
  if (one_array()) return cases_ > 0 ? whole_.nbytes() / static_cast<std::size_t>(cases_) : 0;
  struct stat st {};
  return ::stat(paths_[static_cast<std::size_t>(i)].c_str(), &st) == 0 ? static_cast<std::size_t>(st.st_size) : 0;
}

ArrayView DenseFiles::read(std::int64_t first, std::int64_t count) {
  QUARRY_EXPECTS(first >= 0 && count >= 0 && first + count <= cases_, spec_, ": cases ", first, "..", first + count,
                 " out of range");
  if (!one_array()) {
    QUARRY_EXPECTS(count == 1, spec_, ": case files are read one at a time");
    current_ = read_case_file(paths_[static_cast<std::size_t>(first)], masks_);
    return current_.view();
  }
  const std::vector<std::int64_t>& shape = whole_.shape();
  std::int64_t per_case = 1;  // elements of one case of one member
  const std::size_t lead = committee_ ? 2 : 1;
  for (std::size_t a = lead; a < shape.size(); ++a) per_case *= shape[a];
  const auto* base = static_cast<const unsigned char*>(whole_.data());
  const std::size_t elem = dtype_size(whole_.dtype());
  std::vector<std::int64_t> sub = shape;
  sub[lead - 1] = count;
  if (!committee_) return ArrayView(base + static_cast<std::size_t>(first * per_case) * elem, whole_.dtype(), sub);
  // [M, count, ...] inside [M, N, ...]: strided along the members.
  std::vector<std::int64_t> strides(sub.size());
  std::int64_t s = 1;
  for (std::size_t a = sub.size(); a-- > 1;) {
    strides[a] = s;
    s *= sub[a];
  }
  strides[0] = cases_ * per_case;
  return ArrayView(base + static_cast<std::size_t>(first * per_case) * elem, whole_.dtype(), sub, strides);
}

void DenseFiles::release(std::int64_t first, std::int64_t count) {
  if (!one_array()) {
    current_ = Array();
    return;
  }
  if (!mapped_ || committee_ || count <= 0) return;
  const std::size_t per = whole_.nbytes() / static_cast<std::size_t>(cases_);
  advise(static_cast<const unsigned char*>(whole_.data()) + static_cast<std::size_t>(first) * per,
         static_cast<std::size_t>(count) * per, MADV_DONTNEED);
}

DenseScores score_dense_files(DenseFiles& files, Acquisition acquisition, DenseOptions o, std::int64_t budget,
                              DenseFiles* ignore, const std::function<void(std::int64_t, std::int64_t)>& progress) {
  const std::int64_t N = files.cases();
  if (ignore)
    QUARRY_EXPECTS(ignore->cases() == N, ignore->spec(), ": ", ignore->cases(), " masks for the ", N, " cases of ",
                   files.spec());
  QUARRY_USAGE_EXPECTS(!o.voxel_map || files.one_array(), files.spec(),
                       ": a voxel map is written for an input that is one array, not for case files");
  if (budget <= 0) {
    const std::uint64_t avail = available_memory();
    budget = avail > 0 ? static_cast<std::int64_t>(avail / 4) : (std::int64_t{1} << 30);
  }
  const std::string input_name = o.input_name;
  float* map = o.voxel_map;
  DenseScores out;
  if (N == 0 && files.one_array()) {
    // No case: the layout and the options are still checked, against the array's shape.
    const ArrayView in = files.read(0, 0);
    ArrayView mask;
    if (ignore && ignore->one_array()) {
      mask = ignore->read(0, 0);
      o.ignore = &mask;
      o.ignore_name = ignore->spec();
    }
    score_dense(in, acquisition, o);
  }
  std::int64_t done = 0;
  while (done < N) {
    std::int64_t count = 1;
    if (files.one_array() && (!ignore || ignore->one_array())) {  // mask files: one case at a time
      const auto per = static_cast<std::int64_t>(std::max<std::size_t>(files.case_bytes(0), 1));
      count = std::clamp<std::int64_t>(budget / per, 1, N - done);
    }
    const ArrayView in = files.read(done, count);
    ArrayView mask;
    if (ignore) {
      mask = ignore->read(done, count);
      o.ignore = &mask;
      o.ignore_name = ignore->one_array() ? ignore->spec() : ignore->case_name(done);
    }
    o.input_name = files.one_array() ? input_name : files.case_name(done);
    const DenseLayout l =
        dense_layout(in, o.committee || acquisition_needs_committee(acquisition), o.channels_last, o.input_name);
    if (map) o.voxel_map = map + done * l.voxels;
    const std::vector<float> s = score_dense(in, acquisition, o);
    const std::int64_t S = l.regions(o.slice_axis, o.patch);
    for (std::int64_t c = 0; c < count; ++c) {
      out.slices.push_back(S);
      out.grids.push_back(l.spatial);
      for (std::int64_t j = 0; j < S; ++j) {
        out.score.push_back(s[static_cast<std::size_t>(c * S + j)]);
        out.case_of.push_back(done + c);
        out.slice.push_back(j);
      }
    }
    files.release(done, count);
    if (ignore) ignore->release(done, count);
    done += count;
    if (progress) progress(done, N);
  }
  return out;
}

}  // namespace quarry
