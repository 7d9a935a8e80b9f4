"""kill -9 during bulk encoding (issue 30, class 3): a job SIGKILLed after its
first shard file is written leaves no manifest (so nothing claims a complete
job), a plain rerun into that folder is refused naming a file and
``--overwrite``, and a rerun with ``--overwrite`` finishes the job: encoded +
failed == listed, a valid manifest, the codes of the model, and nothing of the
killed run left (its ``beam-temp-*`` staging folder stayed before)."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_hash import beam
from tests.beam.helpers import BAD, reference

READY = "first shard written"
# The job of `python -m keras_hash.beam`, stopped for the kill right after
# its first shard file is on disk (the manifest comes after every shard).
CHILD = f"""
import sys, time
from keras_hash.beam import __main__ as command, shards
write_shard = shards.write_shard
def stop_after_first(*args, **kwargs):
    entry = write_shard(*args, **kwargs)
    print({READY!r}, flush=True)
    time.sleep(120)
    return entry
shards.write_shard = stop_after_first
command.main(sys.argv[1:])
"""


def kill_after_first_shard(argv, timeout=60):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    start = time.monotonic()
    try:
        for line in child.stdout:  # TensorFlow or Beam may print first
            if line.strip() == READY:
                return
            assert time.monotonic() - start < timeout, "the child never got there"
        pytest.fail(f"the job ended (rc {child.wait()}) before its first shard")
    finally:
        child.kill()  # SIGKILL: no clean-up code runs
        child.wait()
        child.stdout.close()


def test_kill_9_mid_job_then_rerun_finishes(run, tmp_path):
    out = tmp_path / "out"
    argv = [
        f"--saved_model={run['root'] / 'models' / 'tiny'}",
        f"--images={run['photos']}",
        f"--output={out}",
        "--batch_size=4",
        "--num_shards=3",
        "--runner=DirectRunner",
        "--direct_num_workers=1",
    ]
    kill_after_first_shard(argv)
    left = sorted(os.listdir(out))
    assert any(name.startswith("codes-") for name in left), left
    assert "manifest.json" not in left  # nothing claims a complete job
    with pytest.raises(FileNotFoundError, match="unfinished run leaves none"):
        beam.read_code_shards(out)
    # a plain rerun is refused, naming a file left and the flag
    with pytest.raises(FileExistsError, match=r"(codes-|errors-|images).*overwrite"):
        beam.encode_images(run["photos"], run["version"], out, num_shards=3)
    manifest = beam.encode_images(
        run["photos"],
        run["version"],
        out,
        num_shards=3,
        overwrite=True,
        pipeline_args=["--direct_num_workers=1"],
    )
    listed = len(run["good"]) + len(BAD)
    assert manifest["count"] == len(run["good"]) and manifest["failed"] == len(BAD)
    assert manifest["count"] + manifest["failed"] == manifest["listed"] == listed
    codes, ids = beam.read_code_shards(out)  # checks every shard against it
    expected = reference(run)
    assert ids.tolist() == sorted(expected)
    np.testing.assert_array_equal(codes, np.stack([expected[i] for i in ids]))
    assert len(beam.read_dead_letters(out)) == len(BAD)
    # nothing of the killed run is left (Beam's staging folder included)
    assert not [name for name in os.listdir(out) if name.startswith("beam-temp-")]
