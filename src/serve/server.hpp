// `quarry project serve`: the labeling page of a project, served over HTTP (cpp-httplib) on
// loopback. People label the open batch one item at a time; every label goes through the
// project's journal (Project::label_rows) and is acknowledged to the page only once it is
// durable; "next batch" runs Project::next in the background.
//
// Security: every request needs the access token (printed at start; kept in DIR/serve.token):
// GET requests in the header X-Quarry-Token or the query (?token=), state-changing POSTs in the
// header only (a cross-site form cannot set it). The Host header must name the address served
// (no DNS rebinding) unless that is a wildcard; bodies are limited in size (chunked ones refused);
// files are served only from the project's batches/ folder, by batch and item number, or the
// files its manifest names, by item.
#pragma once
#include <cstdint>
#include <string>

namespace quarry::serve {

struct ServeOptions {
  std::string dir;
  std::string host = "127.0.0.1";
  int port = 8765;        // 0: any free port (the URL printed says which)
  std::string token;      // "" = DIR/serve.token, made (random) on the first start
  std::int64_t k = 0;     // batch size of "next batch" (0: the last batch's size, else 100)
  double lock_wait = 10;  // seconds a label waits for another command writing to the project
};

/// Serves until SIGINT or SIGTERM; prints the page's address (with the token) on stdout first.
/// Returns the exit status.
int run(const ServeOptions& options);

/// The labeling page (src/serve/page.cpp): one self-contained HTML document.
const char* page_html();

}  // namespace quarry::serve
