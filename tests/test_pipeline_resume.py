"""Kill and resume, end to end: a paper-mini run SIGKILLed inside three of its stages (synthesis, train, evaluate),
resumed each time, ends with the same records and dataset as the uninterrupted run that test_pipeline.py checks (the
shared `mini_reference`). In a file of its own so that under `pytest -n 2` it runs beside test_pipeline.py; it asks
for the reference only once its own run has finished."""
import json, signal, subprocess, time
from pipeline_run import ROOT, mini_params as params, omind_cmd, omind, snapshot

KILL_IN = ("synthesis", "train", "evaluate")             # a stage to kill the run in, one per attempt
KILL_AFTER = 8.0                                          # seconds after the stage is marked running: its kernel is at work

def stage_status(run, stage):
    try: return json.loads((run/"manifest.json").read_text())["stages"].get(stage, {}).get("status")
    except (OSError, ValueError, KeyError): return None    # not written yet

def test_sigkill_at_several_points_then_resume(tmp_path, request):
    p = params(tmp_path)
    run = tmp_path/"results"/"mini"
    killed = []
    for stage in KILL_IN:                                 # kill inside three stages of a run, resuming each time
        proc = subprocess.Popen(omind_cmd("run", str(p)), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0, seen = time.time(), None
        while proc.poll() is None and time.time() - t0 < 900:
            if seen is None and stage_status(run, stage) == "running": seen = time.time()
            if seen is not None and time.time() - seen > KILL_AFTER:
                proc.send_signal(signal.SIGKILL); proc.wait(); killed.append(stage); break
            time.sleep(0.2)
        if proc.poll() is None: proc.kill(); proc.wait()
        time.sleep(2)                                     # the orphaned kernel notices its parent is gone and exits
        st = omind("status", str(run))
        assert " running " not in st.stdout, st.stdout    # nothing runs any more: a stage it was in reads "interrupted"
        assert stage_status(run, stage) != "done" or stage not in killed, (stage, st.stdout)
    assert killed == list(KILL_IN), killed                # each attempt was killed inside its stage, none ran to the end
    r = omind("run", str(p))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    b = json.loads(json.dumps(snapshot(run)))
    a = request.getfixturevalue("mini_reference")["snapshot"]   # asked for only now: the other worker may be running it
    assert a.keys() == b.keys()
    for k in a: assert a[k] == b[k], f"{k} differs after kill-and-resume"
