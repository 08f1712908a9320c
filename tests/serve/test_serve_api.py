"""`quarry project serve`: its HTTP API as a client (and a hostile one) uses it.

Runs the built `quarry-loop` (QUARRY_LOOP) on projects over the synthetic pool in a scratch
folder. Labels, conflicts between sessions, the token, the Host header, oversized requests, path
traversal, a kill -9 of the server mid-batch and the next round in the background. Where
QUARRY_TORCH=1 a round also trains a model, and the batch after it carries predictions.
"""
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import threading
import time

import pytest

QUARRY = os.environ.get("QUARRY_LOOP", "quarry-loop")
TORCH = os.environ.get("QUARRY_TORCH", "0") == "1"
CLASSES = ["ring", "cross", "square", "bar"]


def run(*args, check=True):
    r = subprocess.run([QUARRY, *args], capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError(f"quarry-loop {' '.join(args)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def make_project(path, strategy="random", pool=300, k=10):
    run("project", "init", str(path), "--dataset", f"synthetic:{pool}", "--classes", ",".join(CLASSES),
        "--strategy", strategy, "--seed", "1", "--threads", "2")
    run("project", "next", str(path), "-k", str(k))
    return path


class Server:
    def __init__(self, project, *extra):
        self.project = project
        self.proc = subprocess.Popen([QUARRY, "project", "serve", str(project), "--port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"http://([\d.]+):(\d+)/\?token=([0-9a-zA-Z_-]+)", line)
        assert m, f"no address printed: {line!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        self.host, self.port, self.token = m.group(1), int(m.group(2)), m.group(3)

    def request(self, method, path, body=None, token="header", headers=None, raw=None):
        c = http.client.HTTPConnection(self.host, self.port, timeout=60)
        h = {"Content-Type": "application/json"}
        if token == "header":
            h["X-Quarry-Token"] = self.token
        elif token == "query":
            path += ("&" if "?" in path else "?") + "token=" + self.token
        elif token is not None:
            h["X-Quarry-Token"] = token
        h.update(headers or {})
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        c.close()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload
        return r.status, parsed

    def state(self):
        status, s = self.request("GET", "/api/state")
        assert status == 200, s
        return s

    def label(self, labels, session="t1"):
        return self.request("POST", "/api/labels", {"session": session, "labels": labels})

    def stop(self):
        """SIGTERM: the server stops cleanly, exit 0 (under a sanitizer: no leak, no error)."""
        stopped = self.proc.poll() is None
        if stopped:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        if stopped:
            assert self.proc.returncode == 0, f"the server ended with {self.proc.returncode}:\n{err}"
            assert "stopping (terminated)" in err, err


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "proj")


@pytest.fixture
def server(project):
    s = Server(project)
    yield s
    s.stop()


def exported(project):
    out = project.parent / f"export-{time.monotonic_ns()}.csv"
    run("project", "export", str(project), "-o", str(out))
    rows = out.read_text().strip().splitlines()[1:]
    return {int(r.split(",")[0]): r.split(",")[1] for r in rows}


def journal_records(project):
    return [json.loads(line.split(" ", 1)[1]) for line in (project / "labels.journal").read_text().splitlines()]


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    return struct.unpack(">II", data[16:24])


def test_page_state_and_images(server, project):
    status, page = server.request("GET", "/", token="query")
    assert status == 200 and b"quarry labeling" in page
    s = server.state()
    assert s["classes"] == CLASSES and s["pool_size"] == 300 and s["labeled"] == 0
    items = s["batch"]["items"]
    assert s["batch"]["number"] == 1 and len(items) == 10
    for it in items:
        assert it["image"] == f"img/0001/{it['index']}.png" and it["label"] is None and it["predicted"] is None
        assert (project / "batches" / "0001" / f"{it['index']}.png").is_file()
    status, png = server.request("GET", "/" + items[0]["image"], token="query")
    assert status == 200 and png_size(png) == (28, 28)
    # The batch CSV and the Label Studio tasks point at the image too.
    csv = (project / "batches" / "0001.csv").read_text().splitlines()
    assert csv[0] == "index,id,path_or_url,score,predicted,confidence"
    assert csv[1].split(",")[2] == f"batches/0001/{items[0]['index']}.png"
    tasks = json.loads((project / "batches" / "0001.labelstudio.json").read_text())
    assert tasks[0]["data"]["image"].startswith("data:image/png;base64,")


def test_token_and_host_are_required(server):
    assert server.request("GET", "/api/state", token=None)[0] == 401
    assert server.request("GET", "/api/state", token="0" * 32)[0] == 401
    assert server.request("GET", "/", token=None)[0] == 401
    assert server.request("GET", "/api/state", token="query")[0] == 200
    # A change needs the header: a token in the query (a cross-site form) is not enough.
    status, body = server.request("POST", "/api/labels", {"labels": []}, token="query")
    assert status == 403 and "X-Quarry-Token" in body["error"]
    assert server.request("POST", "/api/labels", {"labels": []}, token="wrong-token-wrong-token")[0] == 401
    # DNS rebinding: a page of another site resolving to 127.0.0.1 sends its own Host.
    status, body = server.request("GET", "/api/state", headers={"Host": "evil.example:80"})
    assert status == 403 and "Host" in body["error"]
    assert server.request("GET", "/api/state", headers={"Host": f"localhost:{server.port}"})[0] == 200


def test_labels_are_saved_in_the_journal(server, project):
    items = server.state()["batch"]["items"]
    status, r = server.label([{"index": items[k]["index"], "label": k % 4} for k in range(3)])
    assert status == 200 and r["saved"] and r["added"] == 3 and r["conflicts"] == [] and r["labeled"] == 3
    assert exported(project) == {items[k]["index"]: CLASSES[k % 4] for k in range(3)}
    recs = journal_records(project)
    assert len(recs) == 1 and recs[0]["source"] == "labeling page (session t1)"
    s = server.state()
    assert [it["label"] for it in s["batch"]["items"][:4]] == [0, 1, 2, None]
    assert s["per_class"] == [1, 1, 1, 0]


def test_conflicts_between_sessions_follow_the_relabel_rules(server, project):
    i = server.state()["batch"]["items"][0]["index"]
    assert server.label([{"index": i, "label": 0}], session="a")[1]["added"] == 1
    # Another session, another class: not saved, reported.
    status, r = server.label([{"index": i, "label": 1}], session="b")
    assert status == 200 and not r["saved"] and r["conflicts"] == [{"index": i, "current": 0, "wanted": 1}]
    # The same class twice: nothing written, no duplicate record.
    status, r = server.label([{"index": i, "label": 0}], session="b")
    assert r["unchanged"] == 1 and not r["saved"]
    assert len(journal_records(project)) == 1
    # An explicit relabel (undo, or "use mine") changes it.
    status, r = server.label([{"index": i, "label": 1, "relabel": True}], session="b")
    assert r["relabeled"] == 1 and exported(project) == {i: "cross"}


def test_two_sessions_at_once_never_duplicate(server, project):
    items = [it["index"] for it in server.state()["batch"]["items"]]
    results = []

    def tab(name):
        for i in items:
            results.append(server.label([{"index": i, "label": i % 4}], session=name)[1])

    threads = [threading.Thread(target=tab, args=(n,)) for n in ("x", "y", "z")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r["added"] for r in results) == len(items)
    assert sum(r["unchanged"] for r in results) == 2 * len(items)
    labels = [lab for rec in journal_records(project) for lab in rec["labels"]]
    assert sorted(index for index, _ in labels) == sorted(items)


def test_bad_requests_save_nothing(server, project):
    i = server.state()["batch"]["items"][0]["index"]
    status, r = server.label([{"index": i, "label": 0}, {"index": 300, "label": 0}])
    assert status == 409 and "index 300 is outside the pool" in r["error"] and "nothing saved" in r["error"]
    status, r = server.label([{"index": i, "label": 4}])
    assert status == 409 and "class id 4" in r["error"]
    status, r = server.label([{"index": i, "label": 0}, {"index": i, "label": 1}])
    assert status == 409 and "labeled again" in r["error"]
    status, r = server.request("POST", "/api/labels", raw="{not json")
    assert status == 400 and "not JSON" in r["error"]
    status, r = server.label([{"index": "7", "label": 0}])
    assert status == 400
    assert not (project / "labels.journal").exists() or journal_records(project) == []


def test_oversized_requests_are_refused(server):
    big = json.dumps({"labels": [{"index": 0, "label": 0}] * 20000})
    assert len(big) > 256 * 1024
    status, _ = server.request("POST", "/api/labels", raw=big)
    assert status == 413
    status, _ = server.request("GET", "/api/state?x=" + "a" * 20000)
    assert status == 414


@pytest.mark.parametrize("path", ["/img/../project.json", "/img/0001/..%2F..%2Fproject.json",
                                  "/img/0001/../../labels.journal", "/project.json", "/batches/0001.csv",
                                  "/img/0001/%2e%2e/x.png", "/item/..%2Fproject.json", "//etc/passwd",
                                  "/img/0001/999999.png", "/item/5"])
def test_no_file_outside_the_batches(server, path):
    status, body = server.request("GET", path, token="query")
    assert status in (400, 404), (path, status)
    assert b"quarry-project" not in (body if isinstance(body, bytes) else json.dumps(body).encode())


def test_kill_mid_batch_loses_nothing_acknowledged(project):
    s = Server(project)
    items = [it["index"] for it in s.state()["batch"]["items"]]
    for k, i in enumerate(items[:4]):
        assert s.label([{"index": i, "label": k % 4}])[1]["saved"]
    s.proc.kill()  # no chance to clean up
    s.proc.wait()
    s.stop()
    s = Server(project)
    try:
        st = s.state()
        assert st["labeled"] == 4
        assert [it["label"] for it in st["batch"]["items"][:5]] == [0, 1, 2, 3, None]
        assert s.label([{"index": i, "label": 0} for i in items[4:]])[1]["added"] == 6
        assert s.state()["pending"] == 0
    finally:
        s.stop()
    assert len(exported(project)) == 10


def wait_round(server, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = server.state()
        if not s["round"]["running"]:
            return s
        time.sleep(0.2)
    raise AssertionError("the round did not finish")


def test_next_batch_in_the_background(server, project):
    items = [it["index"] for it in server.state()["batch"]["items"]]
    status, r = server.request("POST", "/api/next", {})
    assert status == 409 and "10 items without a label" in r["error"]
    server.label([{"index": i, "label": 0} for i in items])
    status, r = server.request("POST", "/api/next", {"k": 7})
    assert status == 202 and r["k"] == 7
    s = wait_round(server)
    assert s["round"]["error"] == "" and s["round"]["result"].startswith("batch 0002: 7 items")
    assert s["batch"]["number"] == 2 and len(s["batch"]["items"]) == 7
    assert not set(it["index"] for it in s["batch"]["items"]) & set(items)
    assert all((project / "batches" / "0002" / f"{it['index']}.png").is_file() for it in s["batch"]["items"])
    assert server.request("POST", "/api/next", {"k": 0})[0] == 400


@pytest.mark.skipif(not TORCH, reason="built without LibTorch: no model to train")
def test_a_round_trains_and_the_next_batch_has_predictions(tmp_path):
    project = make_project(tmp_path / "model", strategy="entropy", pool=400, k=40)
    s = Server(project)
    try:
        items = [it["index"] for it in s.state()["batch"]["items"]]
        assert s.label([{"index": i, "label": i % 4} for i in items])[1]["added"] == 40
        assert s.request("POST", "/api/next", {})[0] == 202
        # While the round trains, a label waits: the answer says so and nothing is written.
        status, r = s.label([{"index": items[0], "label": 1, "relabel": True}])
        assert status == 503 and "being prepared" in r["error"] or status == 200 and r["relabeled"] == 1
        st = wait_round(s)
        assert st["round"]["error"] == "", st["round"]
        assert any("training" in line for line in st["round"]["log"])
        assert len(st["rounds"]) == 1 and st["rounds"][0]["labels"] == 40
        batch = st["batch"]["items"]
        assert st["batch"]["number"] == 2 and len(batch) == 40
        for it in batch:
            assert it["predicted"] in range(4) and 0.25 <= it["confidence"] <= 1.0
        csv = (project / "batches" / "0002.csv").read_text().splitlines()
        assert csv[1].split(",")[4] in CLASSES
        tasks = json.loads((project / "batches" / "0002.labelstudio.json").read_text())
        assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"][0] in CLASSES
        assert exported(project)[items[0]] == ("ring" if status == 503 else "cross")
    finally:
        s.stop()


def test_serve_refuses_what_is_not_a_project(tmp_path):
    r = run("project", "serve", str(tmp_path / "missing"), "--port", "0", check=False)
    assert r.returncode == 1 and "missing" in r.stderr
    r = run("project", "serve", str(tmp_path), "--port", "70000", check=False)
    assert r.returncode == 2
    (tmp_path / "p").mkdir()
    proj = make_project(tmp_path / "p2")
    r = run("project", "serve", str(proj), "--token", "short", "--port", "0", check=False)
    assert r.returncode == 2 and "--token" in r.stderr


def test_a_port_in_use_is_an_error(server, project):
    r = run("project", "serve", str(project), "--port", str(server.port), check=False)
    assert r.returncode == 1 and "in use" in r.stderr, r.stderr
    assert server.state()["batch"]["number"] == 1  # the first server still answers


def test_the_token_is_kept_for_a_restart(project):
    s = Server(project)
    token = s.token
    s.stop()
    assert (project / "serve.token").read_text().strip() == token
    assert os.stat(project / "serve.token").st_mode & 0o777 == 0o600
    s = Server(project)
    try:
        assert s.token == token  # pages still open keep working
    finally:
        s.stop()
    s = Server(project, "--token", "another-token-of-this-run")
    try:
        assert s.token == "another-token-of-this-run"
        assert s.request("GET", "/api/state", token=token)[0] == 401
    finally:
        s.stop()


def test_a_stop_right_after_the_address_is_printed_is_clean(project):
    # The address line is the promise that SIGTERM is handled (once, CI sent it between the line
    # and the handler and the server died of the signal); then the stop must not hang either.
    for _ in range(8):
        Server(project).stop()


def test_chunked_bodies_and_lookalike_hosts_are_refused(server):
    c = http.client.HTTPConnection(server.host, server.port, timeout=30)
    c.putrequest("POST", "/api/labels")
    c.putheader("X-Quarry-Token", server.token)
    c.putheader("Transfer-Encoding", "chunked")
    c.endheaders()
    c.send(b"5\r\n{\"a\":\r\n0\r\n\r\n")
    assert c.getresponse().status == 411
    c.close()
    for host in ("127.0.0.1.evil.example", "127.evil.example", "localhost.evil.example"):
        assert server.request("GET", "/api/state", headers={"Host": host})[0] == 403, host


def test_links_in_the_batches_folder_are_not_followed(server, project):
    (project / "batches" / "0001" / "999.png").symlink_to(project / "project.json")
    status, body = server.request("GET", "/img/0001/999.png", token="query")
    assert status == 404 and b"quarry-project" not in json.dumps(body).encode()


def test_concurrent_next_requests_make_one_batch(server, project):
    items = [it["index"] for it in server.state()["batch"]["items"]]
    server.label([{"index": i, "label": 1} for i in items])
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(server.request("POST", "/api/next", {"k": 3})[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_round(server)
    time.sleep(0.5)
    s = wait_round(server)
    assert answers.count(202) >= 1
    assert s["batch"]["number"] == 2 and s["batches"] == 2, (answers, s["round"])


def test_manifest_files_and_urls_come_first(tmp_path):
    img = tmp_path / "scan.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    rows = ["index,id,path_or_url"]
    for i in range(100):
        path = "https://example.org/%d.png" % i if i % 3 == 0 else str(img) if i % 3 == 1 else ""
        rows.append(f"{i},case-{i},{path}")
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    project = tmp_path / "m"
    run("project", "init", str(project), "--dataset", "synthetic:100", "--classes", ",".join(CLASSES), "--strategy",
        "random", "--seed", "1", "--manifest", str(tmp_path / "items.csv"), "--threads", "2")
    run("project", "next", str(project), "-k", "30")
    s = Server(project)
    try:
        for it in s.state()["batch"]["items"]:
            i = it["index"]
            rendered = project / "batches" / "0001" / f"{i}.png"
            assert it["id"] == f"case-{i}"
            if i % 3 == 0:
                assert it["image"] == f"https://example.org/{i}.png" and not rendered.exists()
            elif i % 3 == 1:
                assert it["image"] == f"item/{i}" and not rendered.exists()
                status, body = s.request("GET", "/item/%d" % i, token="query")
                assert status == 200 and body == img.read_bytes()
            else:
                assert it["image"] == f"img/0001/{i}.png" and rendered.is_file()
    finally:
        s.stop()


@pytest.mark.skipif(not TORCH, reason="built without LibTorch: no round long enough to interrupt")
def test_ctrl_c_during_a_round_waits_for_it(tmp_path):
    project = make_project(tmp_path / "int", strategy="entropy", pool=400, k=20)
    s = Server(project)
    items = [it["index"] for it in s.state()["batch"]["items"]]
    s.label([{"index": i, "label": i % 4} for i in items])
    assert s.request("POST", "/api/next", {})[0] == 202
    time.sleep(0.5)
    s.proc.send_signal(signal.SIGINT)
    s.proc.wait(timeout=300)
    err = s.proc.stderr.read()
    s.stop()
    assert s.proc.returncode == 0, err
    assert "stopping (interrupted)" in err and "waiting for the round" in err, err
    st = json.loads(run("project", "status", str(project), "--format", "json").stdout)
    assert st["batches"] == 2 and st["pending"] == 20
