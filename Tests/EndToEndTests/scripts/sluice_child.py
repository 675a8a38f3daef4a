"""Shared by the scripts that run the real sluice as a child process."""
import json, os, signal, subprocess


def finish(gw, log, scratch, result):
    """Stops sluice (SIGTERM, then SIGKILL after 10 s), adds its final total
    counters line (or its last lines) to `result` and prints it as JSON."""
    if gw.poll() is None:
        gw.send_signal(signal.SIGTERM)
    try:
        gw.wait(timeout=10)
    except subprocess.TimeoutExpired:
        gw.kill()
        gw.wait()
    log.close()
    lines = open(os.path.join(scratch, "sluice.log")).read().splitlines()
    result["final"] = [l for l in lines if l.startswith("final: total")][-1:] or lines[-5:]
    print(json.dumps(result))
