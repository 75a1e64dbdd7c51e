"""The lab cleans up after itself, also when its owner is terminated."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from xenha.lab.core import CLAIMS

OWNER = '''
import time
from xenha.lab import dom0
from xenha.lab.core import Lab
lab = Lab()
try:
    dom0.add_host(lab, 'dom0-1')
    print(lab.dir, lab.block, flush=True)
    time.sleep(120)
finally:
    lab.down()
'''


def _sshds_of(directory: str) -> list[str]:
    out = subprocess.run(['pgrep', '-f', f'sshd.*{directory}'], capture_output=True,
                         text=True).stdout
    return out.split()


def test_terminated_owner_takes_its_lab_down():
    for sig in (signal.SIGTERM, signal.SIGHUP):
        owner = subprocess.Popen([sys.executable, '-c', OWNER], stdout=subprocess.PIPE,
                                 text=True)
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
