"""Headless Chromium screenshots of JupyterLab as `make lab` serves it (rooted at the repository).

Opens an executed notebook of a finished run (with its figures) and the exploration notebook (executed on the run
first, into results/<run>/explore/, which git ignores) and saves one PNG of each. It fails when a notebook opens with
a dialog (e.g. "Select Kernel": the notebook has no kernelspec JupyterLab knows) or shows none of what it should.

    make screenshots                                   # PNGs under results/screenshots/ (ignored by git)
    .venv/bin/python tools/screenshots.py --out /tmp/shots --run smoke

Needs Chromium (Debian: `apt-get install -y chromium`); Chromium is driven through its DevTools protocol with
tornado's websocket client (tornado comes with Jupyter)."""
import argparse, asyncio, base64, json, os, secrets, shutil, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name): return shutil.which(name)
    sys.exit("screenshots: no Chromium found; install it, e.g. `apt-get install -y chromium` (Debian / Ubuntu)")


def wait_http(url: str, timeout: float = 90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status == 200: return json.loads(r.read() or b"null")
        except Exception: time.sleep(0.5)
    raise TimeoutError(f"nothing answered at {url} within {timeout:.0f} s")


def start_lab(port: int, token: str, work: Path) -> subprocess.Popen:
    "JupyterLab as `make lab` starts it (root_dir = the repository, default URL nbs/), on a free port with a token."
    news = work/"settings"/"@jupyterlab"/"apputils-extension"/"notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True); news.write_text(json.dumps({"fetchNews": "false"}))   # no "Jupyter news?" toast
    cmd = [str(Path(sys.executable).parent/"jupyter"), "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
           f"--IdentityProvider.token={token}", "--ServerApp.root_dir=.", "--LabApp.default_url=/lab/tree/nbs",
           f"--LabApp.workspaces_dir={work/'workspaces'}", f"--LabApp.user_settings_dir={work/'settings'}"]
    cmd += ["--allow-root"] if os.geteuid() == 0 else []
    log = open(work/"lab.log", "wb")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "JUPYTER_RUNTIME_DIR": str(work/"runtime")})


class Tab:
    "One Chromium page driven over the DevTools protocol."
    def __init__(self, ws): self.ws, self.n = ws, 0

    @classmethod
    async def open(cls, debug_port: int):
        from tornado.websocket import websocket_connect
        req = urllib.request.Request(f"http://127.0.0.1:{debug_port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r: target = json.loads(r.read())
        return cls(await websocket_connect(target["webSocketDebuggerUrl"], max_message_size=256 * 1024 * 1024))

    async def call(self, method: str, **params):
        self.n += 1; mid = self.n
        await self.ws.write_message(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("id") == mid:
                if "error" in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expr: str):
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")


STATE_JS = """(() => {
  const nb = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook');
  const dialogs = [...document.querySelectorAll('.jp-Dialog')].map(d => d.innerText.slice(0, 200));
  return {cells: nb ? nb.querySelectorAll('.jp-Cell').length : 0,
          images: nb ? [...nb.querySelectorAll('.jp-OutputArea-output img')].filter(i => i.complete && i.naturalWidth > 0).length : 0,
          tables: nb ? nb.querySelectorAll('.jp-OutputArea-output table').length : 0,
          dialogs, kernel: (document.querySelector('.jp-Toolbar-kernelName') || {}).innerText || ''};
})()"""


async def shoot(debug_port: int, url: str, out: Path, want: str, timeout: float = 120) -> dict:
    "Open `url`, wait until the notebook shows `want` (images / tables), scroll to the first one, save a PNG."
    tab = await Tab.open(debug_port)
    await tab.call("Page.enable")
    await tab.call("Emulation.setDeviceMetricsOverride", width=1600, height=1100, deviceScaleFactor=1, mobile=False)
    await tab.call("Page.navigate", url=url)
    t0, st = time.time(), {}
    while time.time() - t0 < timeout:
        await asyncio.sleep(1)
        st = await tab.js(STATE_JS) or {}
        if st.get("dialogs"): break
        if st.get("cells") and st.get(want): break
    await asyncio.sleep(3)                                   # let the layout settle
    st = await tab.js(STATE_JS) or st
    sel = ".jp-OutputArea-output img" if want == "images" else ".jp-OutputArea-output table"
    await tab.js(f"(() => {{ const e = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) {sel}'); "
                 f"if (e) e.closest('.jp-Cell').scrollIntoView({{block: 'start'}}); }})()")
    await asyncio.sleep(2)
    shot = await tab.call("Page.captureScreenshot", format="png")
    out.write_bytes(base64.b64decode(shot["data"]))
    tab.ws.close()
    return st


def execute_explore(run: str, dest: Path):
    "Execute nbs/13_explore.ipynb on `run` (its `run` cell set to it) into `dest` (the kernel starts in nbs/, as in JupyterLab)."
    import nbformat
    from nbclient import NotebookClient
    nb = nbformat.read(ROOT/"nbs"/"13_explore.ipynb", as_version=4)
    for c in nb.cells:
        if c.cell_type == "code" and c.source.strip().startswith("run = "): c.source = f"run = {run!r}"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT/"nbs")}}).execute()
    dest.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    from omind.runner import portable_notebook
    portable_notebook(dest, ROOT)       # published with the run: no path of this machine in it


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/screenshots", help="folder for the PNGs (default results/screenshots/, ignored by git)")
    ap.add_argument("--run", default="smoke", help="the finished run to show (default smoke)")
    ap.add_argument("--notebook", default="09_figures.ipynb", help="executed notebook of the run to open (default 09_figures.ipynb)")
    a = ap.parse_args(argv)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    executed = Path("results")/a.run/"notebooks"/a.notebook
    if not (ROOT/executed).exists(): sys.exit(f"screenshots: {executed} does not exist: finish the run first (`omind run params/{a.run}.yaml`)")
    explore = Path("results")/a.run/"explore"/"13_explore.ipynb"
    print(f"executing nbs/13_explore.ipynb on run '{a.run}' -> {explore}")
    execute_explore(a.run, ROOT/explore)
    work = Path(tempfile.mkdtemp(prefix="omind-shots-"))
    port, dport, token = free_port(), free_port(), secrets.token_hex(16)
    lab = start_lab(port, token, work)
    chrome = None
    try:
        wait_http(f"http://127.0.0.1:{port}/api/status?token={token}")
        chrome = subprocess.Popen([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                   f"--remote-debugging-port={dport}", f"--user-data-dir={work/'chrome'}", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"http://127.0.0.1:{dport}/json/version")
        bad, shots = [], []
        for path, want, name in ((executed, "images", f"lab-{a.run}-{executed.stem}.png"), (explore, "tables", f"lab-{a.run}-explore.png")):
            url = f"http://127.0.0.1:{port}/lab/tree/{path.as_posix()}?reset&token={token}"
            st = asyncio.run(shoot(dport, url, out/name, want))
            print(f"{out/name}: {path} ({st.get('cells')} cells, {st.get('images')} figures, {st.get('tables')} tables, kernel {st.get('kernel')!r})")
            if st.get("dialogs"): bad.append(f"{path}: a dialog is open: {st['dialogs']}")
            elif not st.get(want): bad.append(f"{path}: no {want} shown")
            shots.append(out/name)
        if bad: sys.exit("screenshots: " + "; ".join(bad))
        return shots
    finally:
        for p in (chrome, lab):
            if p is not None:
                p.terminate()
                try: p.wait(15)
                except subprocess.TimeoutExpired: p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
