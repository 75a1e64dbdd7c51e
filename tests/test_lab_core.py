"""The lab cleans up after itself, also when its owner is terminated."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from xenha_lab.core import CLAIMS

OWNER = '''
import time
from xenha_lab import dom0
from xenha_lab.core import Lab
lab = Lab()
try:
    dom0.add_host(lab, 'dom0-1')
    print(lab.dir, lab.block, flush=True)
    time.sleep(120)
finally:
    lab.down()
'''


def _default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _sshds_of(directory: str) -> list[str]:
    out = subprocess.run(['pgrep', '-f', f'sshd.*{directory}'], capture_output=True,
                         text=True).stdout
    return out.split()


def test_terminated_owner_takes_its_lab_down():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        # an owner in a terminal: under nohup (SIGHUP ignored, inherited) a lab
        # rightly keeps running on a hangup
        owner = subprocess.Popen([sys.executable, '-c', OWNER], stdout=subprocess.PIPE,
                                 text=True, preexec_fn=_default_signals)
        directory, block = owner.stdout.readline().split()
        assert Path(directory, 'lab.json').exists() and _sshds_of(directory)
        owner.send_signal(sig)
        assert owner.wait(timeout=30) == 128 + sig
        deadline = time.monotonic() + 5
        while _sshds_of(directory) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(directory).exists()
        assert not _sshds_of(directory)
        assert not (CLAIMS / block).exists()


def test_a_lab_whose_directory_was_deleted_is_swept_when_its_block_is_reused():
    """Someone removed a live lab's directory (rm -rf of a kept demo lab): its
    record is gone, so no `down` can replay it.  The next lab on that block
    stops what still writes to that directory's logs and removes the block's
    namespaces, instead of failing on `ip netns add`."""
    import shutil
    from xenha_lab import dom0
    from xenha_lab.core import Lab
    lost = Lab()
    dom0.add_host(lost, 'dom0-1')
    ns = lost.netns('san')
    sleeper = lost.spawn('sleeper', ['sleep', '300'], netns=ns)
    directory, block = str(lost.dir), lost.block
    assert _sshds_of(directory)
    shutil.rmtree(directory)
    lab = Lab(block=block)
    try:
        assert not _sshds_of(directory)
        assert not Path(f'/proc/{sleeper.pid}').exists()
        listed = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True)
        assert ns not in listed.stdout
        assert lab.netns('san') == ns          # the name is free again
    finally:
        assert lab.down() == []
