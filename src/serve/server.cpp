// `quarry project serve` (see server.hpp): the HTTP API of the labeling page.
//
//   GET  /                      the page
//   GET  /api/state             the open batch (items, predictions, labels), class balance,
//                               the learning curve over rounds, the round in progress
//   POST /api/labels            {"session": S, "labels": [{"index", "label", "relabel"}]}: saved
//                               through the journal (fsync'd) before the answer
//   POST /api/next              {"k": K, "replace_pending": B}: the next round (retrain, select) in
//                               the background
//   GET  /img/NNNN/INDEX.png    a rendered image of batch NNNN
//   GET  /item/INDEX            the image file the manifest names for an item
#include "serve/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "io/files.hpp"
#include "quarry/error.hpp"
#include "quarry/project.hpp"

namespace quarry::serve {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr std::size_t kMaxBody = 256 * 1024;  // a group of labels is a few KiB
constexpr std::size_t kMaxLabelsPerRequest = 1000;
constexpr std::size_t kMaxLogLines = 200;
constexpr std::size_t kThreads = 32;

std::string random_token() {
  std::random_device rd;
  std::string t;
  for (int i = 0; i < 4; ++i) t += fmt::format("{:08x}", rd());
  return t;
}

// Equal strings, in time that does not depend on where they differ.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// localhost, ::1 or an IPv4 address 127.x.y.z (parsed as an address: "127.0.0.1.evil.example" is not).
bool is_loopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

bool is_wildcard(const std::string& host) { return host == "0.0.0.0" || host == "::" || host.empty(); }

// The host name of a Host header ("127.0.0.1:8765" -> "127.0.0.1", "[::1]:80" -> "::1").
std::string host_name(const std::string& header) {
  if (!header.empty() && header[0] == '[') {
    const auto end = header.find(']');
    return end == std::string::npos ? header : header.substr(1, end - 1);
  }
  return header.substr(0, header.find(':'));
}

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_header("Cache-Control", "no-store");
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, {{"error", message}});
}

json optional_json(const std::optional<double>& v) { return v ? json(*v) : json(nullptr); }

bool is_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

// The content type of an image file the manifest names, by extension; "" for anything else.
std::string image_type(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  if (ext == ".png") return "image/png";
  if (ext == ".jpg" || ext == ".jpeg") return "image/jpeg";
  if (ext == ".gif") return "image/gif";
  if (ext == ".webp") return "image/webp";
  if (ext == ".bmp") return "image/bmp";
  return "";
}

// The whole file (the engine's reader, with its size cap), or false where it cannot be read.
bool read_file(const std::string& path, std::string& out) {
  try {
    out = read_text_file(path);
    return true;
  } catch (const Error&) {
    return false;
  }
}

// The round in the background: Project::next in a thread, its progress lines kept for the page.
class Round {
 public:
  bool start(const std::string& dir, const NextOptions& o, double lock_wait) {
    std::lock_guard<std::mutex> g(mu_);
    if (running_) return false;
    if (thread_.joinable()) thread_.join();
    running_ = true;
    log_.clear();
    error_.clear();
    result_.clear();
    ++id_;
    thread_ = std::thread([this, dir, o, lock_wait] {
      std::string error, result;
      try {
        Project p(dir, 0);
        const NextResult r = p.next(o, [this](const std::string& line) { add_line(line); }, lock_wait);
        result = fmt::format("batch {:04d}: {} items ({}){}", r.batch.number, r.batch.index.size(), r.batch.strategy,
                             r.retrained ? ", model retrained" : "");
      } catch (const std::exception& e) {
        error = e.what();
      }
      std::lock_guard<std::mutex> g2(mu_);
      error_ = error;
      result_ = result;
      running_ = false;
      std::fprintf(stderr, "quarry: %s\n", error.empty() ? result.c_str() : ("next batch failed: " + error).c_str());
    });
    return true;
  }
  bool running() const {
    std::lock_guard<std::mutex> g(mu_);
    return running_;
  }
  json to_json() const {
    std::lock_guard<std::mutex> g(mu_);
    return {{"id", id_}, {"running", running_}, {"log", log_}, {"error", error_}, {"result", result_}};
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  void add_line(const std::string& line) {
    std::lock_guard<std::mutex> g(mu_);
    if (log_.size() < kMaxLogLines) log_.push_back(line);
    std::fprintf(stderr, "quarry: %s\n", line.c_str());
  }
  mutable std::mutex mu_;
  std::thread thread_;
  bool running_ = false;
  std::int64_t id_ = 0;
  std::vector<std::string> log_;
  std::string error_, result_;
};

class LabelServer {
 public:
  explicit LabelServer(const ServeOptions& o) : o_(o), project_(o.dir, 0) {
    const fs::path dir = fs::path(o.dir).lexically_normal();
    name_ = (dir.has_filename() ? dir.filename() : dir.parent_path().filename()).string();
  }

  void routes(httplib::Server& svr) {
    svr.set_payload_max_length(kMaxBody);
    // Slow or idle connections hold a thread each: more threads, shorter waits.
    svr.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
    svr.set_read_timeout(3, 0);
    svr.set_write_timeout(5, 0);
    svr.set_keep_alive_timeout(2);
    // SO_REUSEADDR only: cpp-httplib's default also sets SO_REUSEPORT, which lets a second server
    // listen on a port in use and take half of its requests.
    svr.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    svr.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                             {"X-Frame-Options", "DENY"},
                             {"Referrer-Policy", "no-referrer"}});
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      return admit(req, res) ? httplib::Server::HandlerResponse::Unhandled : httplib::Server::HandlerResponse::Handled;
    });
    svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_header("Content-Security-Policy",
                     "default-src 'self'; img-src 'self' data: http: https:; style-src 'unsafe-inline'; "
                     "script-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; form-action 'none'");
      res.set_content(page_html(), "text/html; charset=utf-8");
    });
    svr.Get("/api/state", [this](const httplib::Request&, httplib::Response& res) { guarded(res, [&] { state(res); }); });
    svr.Post("/api/labels", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { labels(req, res); });
    });
    svr.Post("/api/next", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { next(req, res); });
    });
    svr.Get(R"(/img/(\d{4,6})/(\d{1,18})\.png)", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { rendered_image(req, res); });
    });
    svr.Get(R"(/item/(\d{1,18}))", [this](const httplib::Request& req, httplib::Response& res) {
      guarded(res, [&] { manifest_image(req, res); });
    });
    svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (res.body.empty()) {
        const char* what = res.status == 404   ? "not found"
                           : res.status == 413 ? "request too large"
                           : res.status == 414 ? "request address too long"
                                               : "bad request";
        send_error(res, res.status, what);
      }
    });
  }

  void set_token(const std::string& token) { o_.token = token; }

  void join_round() {
    if (round_.running()) std::fprintf(stderr, "quarry: waiting for the round in progress to finish\n");
    round_.join();
  }

 private:
  // The token (and, for a loopback address, the Host header) of every request.
  bool admit(const httplib::Request& req, httplib::Response& res) {
    if (!is_wildcard(o_.host)) {
      const std::string host = host_name(req.get_header_value("Host"));
      const bool ok = host == o_.host || (is_loopback(o_.host) && is_loopback(host));
      if (!ok) {
        send_error(res, 403, "unexpected Host header '" + host + "': open the address quarry printed");
        return false;
      }
    }
    // A chunked body is not bounded by the size limit (set_payload_max_length counts
    // Content-Length bodies only); the page never sends one.
    if (req.has_header("Transfer-Encoding")) {
      send_error(res, 411, "a body needs a Content-Length (no Transfer-Encoding)");
      return false;
    }
    const std::string header = req.get_header_value("X-Quarry-Token");
    const bool posting = req.method != "GET" && req.method != "HEAD";
    if (posting) {
      if (!same_secret(header, o_.token)) {
        send_error(res, header.empty() ? 403 : 401,
                   header.empty() ? "a change needs the access token in the X-Quarry-Token header"
                                  : "wrong access token");
        return false;
      }
      return true;
    }
    const std::string given = header.empty() ? req.get_param_value("token") : header;
    if (!same_secret(given, o_.token)) {
      if (req.path == "/") {
        res.status = 401;
        res.set_content("<!doctype html><title>quarry</title><p>This page needs its access token: open the "
                        "address that <code>quarry project serve</code> printed (it ends in ?token=...).",
                        "text/html; charset=utf-8");
      } else {
        send_error(res, 401, given.empty() ? "the access token is missing" : "wrong access token");
      }
      return false;
    }
    return true;
  }

  // Errors of the project become answers: a usage error 400, a data error 409.
  template <class F>
  void guarded(httplib::Response& res, F&& f) {
    try {
      f();
    } catch (const UsageError& e) {
      send_error(res, 400, e.what());
    } catch (const Error& e) {
      send_error(res, 409, e.what());
    } catch (const std::exception& e) {
      send_error(res, 500, e.what());
    }
  }

  // The batch the page shows: the newest open one, else the newest.
  static const BatchInfo* shown_batch(const Project& p) {
    const auto& b = p.batches();
    for (auto it = b.rbegin(); it != b.rend(); ++it)
      if (it->state == "open") return &*it;
    return b.empty() ? nullptr : &b.back();
  }

  // What the page shows for an item: the manifest's URL or file, else the rendered image.
  std::string image_of(const Project& p, const BatchInfo& b, std::int64_t index) const {
    const auto& m = p.manifest();
    if (!m.empty() && m[static_cast<std::size_t>(index)]) {
      const std::string& path = m[static_cast<std::size_t>(index)]->path_or_url;
      if (is_url(path)) return path;
      if (!path.empty()) return image_type(path).empty() ? "" : fmt::format("item/{}", index);
    }
    std::error_code ec;
    const std::string rendered = fmt::format("batches/{:04d}/{}.png", b.number, index);
    if (fs::is_regular_file(fs::path(o_.dir) / rendered, ec)) return "img/" + rendered.substr(8);
    return "";
  }

  void state(httplib::Response& res) {
    std::lock_guard<std::mutex> g(project_mu_);
    project_.refresh(0);
    const Project& p = project_;
    const ProjectStatus s = p.status();
    const auto& classes = p.config().classes;
    json j;
    j["project"] = name_;
    j["classes"] = classes;
    j["pool_size"] = s.pool_size;
    j["labeled"] = s.labeled;
    j["per_class"] = s.per_class;
    j["batches"] = s.batches;
    j["pending"] = s.pending;
    j["model_current"] = s.model_current;
    j["strategy"] = p.config().strategy;
    j["torn"] = s.torn;
    j["next_k"] = next_k(p);
    j["rounds"] = json::array();
    for (const auto& r : s.rounds)
      j["rounds"].push_back({{"labels", r.labels},
                             {"val_accuracy", optional_json(r.val_accuracy)},
                             {"val_balanced_accuracy", optional_json(r.val_balanced_accuracy)}});
    j["round"] = round_.to_json();
    const BatchInfo* b = shown_batch(p);
    if (!b) {
      j["batch"] = nullptr;
    } else {
      json items = json::array();
      for (std::size_t r = 0; r < b->index.size(); ++r) {
        const std::int64_t i = b->index[r];
        const auto& m = p.manifest();
        const auto label = p.labels().find(i);
        json item = {{"index", i},
                     {"id", !m.empty() && m[static_cast<std::size_t>(i)] ? m[static_cast<std::size_t>(i)]->id
                                                                         : std::to_string(i)},
                     {"score", b->score[r]},
                     {"image", image_of(p, *b, i)},
                     {"label", label == p.labels().end() ? json(nullptr) : json(label->second)}};
        item["predicted"] = b->predicted.empty() ? json(nullptr) : json(b->predicted[r]);
        item["confidence"] = b->predicted.empty() ? json(nullptr) : json(b->confidence[r]);
        items.push_back(std::move(item));
      }
      j["batch"] = {{"number", b->number}, {"state", b->state}, {"strategy", b->strategy}, {"items", items}};
    }
    send_json(res, 200, j);
  }

  static json parse_body(const httplib::Request& req) {
    try {
      return req.body.empty() ? json::object() : json::parse(req.body);
    } catch (const json::exception& e) {
      throw UsageError(std::string("the request is not JSON: ") + e.what());
    }
  }

  void labels(const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    QUARRY_USAGE_EXPECTS(body.is_object() && body.contains("labels") && body["labels"].is_array(),
                         "expected {\"labels\": [{\"index\": I, \"label\": C, \"relabel\": false}, ...]}");
    QUARRY_USAGE_EXPECTS(body["labels"].size() <= kMaxLabelsPerRequest, "at most ", kMaxLabelsPerRequest,
                         " labels a request, got ", body["labels"].size());
    std::vector<LabelRow> rows;
    for (std::size_t r = 0; r < body["labels"].size(); ++r) {
      const json& l = body["labels"][r];
      QUARRY_USAGE_EXPECTS(l.is_object() && l.contains("index") && l["index"].is_number_integer() &&
                               l.contains("label") && l["label"].is_number_integer() &&
                               (!l.contains("relabel") || l["relabel"].is_boolean()),
                           "label ", r + 1, ": expected {\"index\": integer, \"label\": class id, \"relabel\": bool}");
      // Values out of range are named as given, not as clamped.
      QUARRY_EXPECTS(!l["index"].is_number_unsigned() || l["index"].get<std::uint64_t>() <= INT64_MAX, "label ",
                     r + 1, ": index ", l["index"].dump(), " is outside the pool");
      QUARRY_EXPECTS(!l["label"].is_number_unsigned() || l["label"].get<std::uint64_t>() <= INT32_MAX, "label ",
                     r + 1, ": class id ", l["label"].dump(), " is not a class");
      const auto c = l["label"].get<std::int64_t>();
      QUARRY_EXPECTS(c >= INT32_MIN && c <= INT32_MAX, "label ", r + 1, ": class id ", c, " is not a class");
      LabelRow row;
      row.index = l["index"].get<std::int64_t>();
      row.label = static_cast<std::int32_t>(c);
      row.allow_relabel = l.value("relabel", false);
      rows.push_back(row);
    }
    if (round_.running()) {
      send_error(res, 503, "the next batch is being prepared; the labels are taken when it is ready");
      return;
    }
    std::string session = body.value("session", json("")).is_string() ? body.value("session", "") : "";
    session.erase(std::remove_if(session.begin(), session.end(),
                                 [](unsigned char c) { return !std::isalnum(c) && c != '-' && c != '_'; }),
                  session.end());
    session = session.substr(0, 40);
    std::lock_guard<std::mutex> g(project_mu_);
    Project& p = project_;
    const ImportSummary s = p.label_rows(rows, "labeling page" + (session.empty() ? "" : " (session " + session + ")"),
                                         o_.lock_wait);
    json conflicts = json::array();
    for (const auto& c : s.conflicts)
      conflicts.push_back({{"index", c.index}, {"current", c.current}, {"wanted", c.wanted}});
    const ProjectStatus st = p.status();
    send_json(res, 200,
              {{"saved", s.seq > 0},
               {"record", s.seq},
               {"added", s.added},
               {"relabeled", s.relabeled},
               {"unchanged", s.unchanged},
               {"conflicts", conflicts},
               {"labeled", st.labeled},
               {"per_class", st.per_class},
               {"pending", st.pending},
               {"warning", s.torn}});
  }

  std::int64_t next_k(const Project& p) const {
    if (o_.k > 0) return o_.k;
    return p.batches().empty() ? 100 : static_cast<std::int64_t>(p.batches().back().index.size());
  }

  void next(const httplib::Request& req, httplib::Response& res) {
    const json body = parse_body(req);
    QUARRY_USAGE_EXPECTS(body.is_object(), "expected {\"k\": batch size}");
    std::lock_guard<std::mutex> g(project_mu_);
    project_.refresh(0);
    const Project& p = project_;
    NextOptions o;
    o.require_labeled = true;  // checked again under the project lock: two requests make one batch
    o.k = next_k(p);
    if (body.contains("k")) {
      QUARRY_USAGE_EXPECTS(body["k"].is_number_integer() && body["k"].get<std::int64_t>() >= 1,
                           "k must be a whole number >= 1");
      o.k = body["k"].get<std::int64_t>();
    }
    if (body.contains("replace_pending")) {
      QUARRY_USAGE_EXPECTS(body["replace_pending"].is_boolean(), "replace_pending must be true or false");
      o.replace_pending = body["replace_pending"].get<bool>();
    }
    const ProjectStatus s = p.status();
    if (s.pending > 0 && !o.replace_pending) {
      send_error(res, 409, fmt::format("batch {:04d} still has {} item{} without a label (\"replace_pending\": true "
                                       "returns them to the pool)", s.open_batch.value_or(0), s.pending,
                                       s.pending == 1 ? "" : "s"));
      return;
    }
    if (!round_.start(o_.dir, o, o_.lock_wait)) {
      send_error(res, 409, "a round is already in progress");
      return;
    }
    send_json(res, 202, {{"started", true}, {"k", o.k}, {"round", round_.to_json()}});
  }

  void rendered_image(const httplib::Request& req, httplib::Response& res) {
    // Only digits reach here (the route's pattern): the path cannot leave batches/.
    const std::string path =
        (fs::path(o_.dir) / "batches" / req.matches[1].str() / (req.matches[2].str() + ".png")).string();
    std::string bytes;
    std::error_code ec;
    // A regular file, not a link placed in batches/ that points elsewhere.
    if (fs::symlink_status(path, ec).type() != fs::file_type::regular || !read_file(path, bytes)) {
      send_error(res, 404, "no such image");
      return;
    }
    res.set_header("Cache-Control", "private, max-age=3600");
    res.set_content(std::move(bytes), "image/png");
  }

  void manifest_image(const httplib::Request& req, httplib::Response& res) {
    std::string path;
    {
      std::lock_guard<std::mutex> g(project_mu_);  // the manifest does not change after init
      const auto& m = project_.manifest();
      std::int64_t index = -1;
      try {
        index = std::stoll(req.matches[1].str());
      } catch (const std::exception&) {
      }
      if (index < 0 || index >= static_cast<std::int64_t>(m.size()) || !m[static_cast<std::size_t>(index)]) {
        send_error(res, 404, "no such item in the manifest");
        return;
      }
      path = m[static_cast<std::size_t>(index)]->path_or_url;
    }
    std::string bytes;
    const std::string type = image_type(path);
    std::error_code ec;
    if (type.empty() || is_url(path) || !fs::is_regular_file(path, ec) || !read_file(path, bytes)) {
      send_error(res, 404, "the manifest names no readable image file for this item");
      return;
    }
    res.set_header("Cache-Control", "private, max-age=3600");
    res.set_content(std::move(bytes), type.c_str());
  }

  ServeOptions o_;
  std::mutex project_mu_;  // project_: one request at a time reads or writes it
  Project project_;
  std::string name_;
  Round round_;
};

}  // namespace

namespace {

// SIGINT and SIGTERM write their number to a pipe that one thread reads (a handler, not a
// blocked mask: threads started before main, such as the BLAS's, would take the signal and die
// of it). The first stops the server; a second, while a round still runs, ends the process.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  const int saved = errno;
  [[maybe_unused]] const auto n = ::write(g_signal_pipe[1], &b, 1);
  errno = saved;
}

bool valid_token(const std::string& t) {
  return t.size() >= 16 && t.size() <= 128 &&
         std::all_of(t.begin(), t.end(), [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; });
}

// The token of DIR/serve.token (mode 0600), made on the first start: a server started again
// accepts the pages still open (and their unsaved labels) with the token they have.
std::string project_token(const std::string& dir) {
  const std::string path = (fs::path(dir) / "serve.token").string();
  std::string t;
  if (read_file(path, t)) {
    while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.pop_back();
    QUARRY_EXPECTS(valid_token(t), path, ": not an access token (16 to 128 letters, digits, '-' or '_'); delete it "
                                         "and a new one is made");
    return t;
  }
  t = random_token();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  QUARRY_EXPECTS(fd >= 0, path, ": cannot write the access token: ", std::strerror(errno));
  const std::string line = t + "\n";
  const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  ::close(fd);
  QUARRY_EXPECTS(ok, path, ": cannot write the access token");
  return t;
}

}  // namespace

int run(const ServeOptions& options) {
  ServeOptions o = options;
  QUARRY_USAGE_EXPECTS(o.port >= 0 && o.port <= 65535, "--port ", o.port, ": expected 0..65535");
  QUARRY_USAGE_EXPECTS(o.token.empty() || valid_token(o.token), "--token: 16 to 128 letters, digits, '-' or '_'");
  LabelServer server(o);  // a clear error for a folder that is not a project
  if (o.token.empty()) o.token = project_token(o.dir);
  server.set_token(o.token);

  httplib::Server svr;
  server.routes(svr);
  int port = o.port;
  if (port == 0) {
    port = svr.bind_to_any_port(o.host);
    QUARRY_EXPECTS(port > 0, "cannot listen on ", o.host, ": no free port, or not an address of this machine");
  } else {
    QUARRY_EXPECTS(svr.bind_to_port(o.host, port), "cannot listen on ", o.host, ":", port,
                   ": the port is in use, or the address is not one of this machine (--port 0 picks a free port)");
  }
  // The handlers are in place before the address is printed: whoever reads it may stop us at once.
  std::atomic<bool> listen_ended{false};
  QUARRY_EXPECTS(::pipe2(g_signal_pipe, O_CLOEXEC) == 0, "cannot make a pipe: ", std::strerror(errno));
  struct sigaction sa{};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::thread stopper([&] {
    unsigned char sig = 0;
    int count = 0;
    for (;;) {
      // The signal may land on this very thread, interrupting the read (EINTR): read again, or
      // the byte the handler wrote would never be read and the server would never stop.
      const ssize_t got = ::read(g_signal_pipe[0], &sig, 1);
      if (got < 0 && errno == EINTR) continue;
      if (got != 1 || sig == 0) break;
      if (++count == 1) {
        std::fprintf(stderr, "quarry: stopping (%s)\n", sig == SIGINT ? "interrupted" : "terminated");
        // A stop() before listen_after_bind() has marked the server running does nothing (and the
        // server would then run on): wait for it to run, or to have ended.
        while (!svr.is_running() && !listen_ended.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        svr.stop();
      } else {
        std::fprintf(stderr, "quarry: stopped without waiting for the round (the labels are saved; `quarry project "
                             "next` makes the batch)\n");
        std::_Exit(130);
      }
    }
  });
  if (!is_loopback(o.host))
    std::fprintf(stderr,
                 "quarry: warning: serving on %s, not loopback: anyone who can reach this machine and has the token "
                 "can label, over plain HTTP (no TLS)\n",
                 o.host.c_str());
  const std::string shown_host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  std::printf("quarry: labeling page of %s at http://%s:%d/?token=%s\n", o.dir.c_str(), shown_host.c_str(), port,
              o.token.c_str());
  std::printf("quarry: Ctrl-C stops it; every label acknowledged on the page is saved in %s/labels.journal\n",
              o.dir.c_str());
  std::fflush(stdout);

  const bool ok = svr.listen_after_bind();
  listen_ended = true;
  server.join_round();
  const unsigned char end = 0;  // wakes the stopper when the server ended on its own
  [[maybe_unused]] const auto n = ::write(g_signal_pipe[1], &end, 1);
  stopper.join();
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  return ok ? 0 : 1;
}

}  // namespace quarry::serve
