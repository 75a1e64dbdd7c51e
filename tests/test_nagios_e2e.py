"""The whole story on a real Nagios 4: a dom0 powered off through its BMC fails
its first host check, Nagios runs the event handler, whose job asks the BMC
(off: the fast path), fences and relocates, and Nagios shows every domU OK
again and the "failover" result.  Also: a crashed
domU restarted in place by the service event handler, and a storage outage
that makes the handler refuse to restart.

Asserted from Nagios' own status file and log, and the journal.  The recovery
time is measured and printed, not asserted (host check 10 s, retry 5 s, 3
attempts).

One Nagios lab for the module (it takes a while to come up), and each test
stands alone on it, in any order: the fixture hands it over with every host
and service checked and OK (and keeps what Nagios said then), and each story
touches its own dom0 and guests only: the power loss dom0-1 (db1, web1 move
to the spare dom0-3), the crash mail1 on dom0-2, the storage outage build1's
disk on dom0-2.
"""

import os
import re
import subprocess
import time

import pytest

from conftest import ssh_where

from xenha_lab import cluster, dom0, nagios, xensim
from xenha.state import StateDB


@pytest.fixture(scope='module')
def nlab():
    """The lab once Nagios has checked every host and service and found them
    OK; `lab.green` is Nagios' status at that moment."""
    lab = cluster.up(nagios=True)
    try:
        try:
            wait('every host and service checked and OK', lambda: all_green(lab), 60)
        except AssertionError as exc:     # say which ones were not
            st = nagios.status(lab)
            raise AssertionError(f'{exc}: ' + '; '.join(
                f"{' '.join(k[1:])}: {v.get('current_state')} {v.get('plugin_output')}"
                for k, v in st.items() if v.get('current_state') != '0'
                or v.get('has_been_checked') != '1')) from None
        lab.green = nagios.status(lab)
        yield lab
    finally:
        assert lab.down() == []


def wait(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out waiting for {what}')
        time.sleep(0.25)


def svc(lab, host, desc):
    return nagios.status(lab).get(('service', host, desc), {})


def journal(lab):
    with StateDB(lab.dir / 'state.db') as db:
        return db.journal_rows()


def all_green(lab):
    """Every service (but the passive one) and every dom0 checked and OK.

    DomU, storage and cluster hosts carry no check of their own: their
    services are what is checked."""
    st = nagios.status(lab)
    want = [v for k, v in st.items() if (k[0] == 'service' and k[2] != 'failover')
            or (k[0] == 'host' and k[1] in lab.info['hosts'])]
    # 3 dom0s + 3 "xen host" + 3 "fencing" + 4 "xen domain" + 4 targets + capacity
    return len(want) >= 18 and all(v.get('has_been_checked') == '1' and
                                   v['current_state'] == '0' for v in want)


def test_all_green_at_first(nlab):
    """What Nagios said once everything was checked (the fixture's snapshot)."""
    green = nlab.green
    out = green[('service', 'web1', 'xen domain')]['plugin_output']
    assert re.fullmatch(r'XEN_DOMU OK - web1 is blocked on dom0-1( \(cached \d+s ago\))?', out)
    # each dom0's BMC (a real ipmi_sim) answers fence_ipmilan, run by Nagios
    for host in nlab.info['hosts']:
        assert green[('service', host, 'fencing')]['plugin_output'] == (
            f'FENCE OK - {host}: agent fence_ipmilan answers (power on)')


def test_bmc_power_off_fails_over_through_nagios(nlab):
    b = nlab.info['bmc']['dom0-1']
    env = dict(os.environ, IPMITOOL_PASSWORD=open(b['password_file']).read().strip())
    t0 = time.time()
    subprocess.run(['ipmitool', '-I', 'lanplus', '-H', b['address'], '-p', str(b['port']),
                    '-U', b['username'], '-E', '-C', '3', 'chassis', 'power', 'off'],
                   check=True, env=env, capture_output=True)
    assert not dom0.powered(nlab, 'dom0-1')

    def recovered():
        doms = [svc(nlab, d, 'xen domain') for d in ('db1', 'web1')]
        return all(d.get('current_state') == '0' and int(d.get('last_check', 0)) >= t0
                   and ' on dom0-3' in d['plugin_output'] for d in doms)
    wait('db1 and web1 OK on dom0-3 in Nagios', recovered, 90)
    recovery = time.time() - t0
    log = nagios.log_lines(nlab)
    # the first failed check fires the fast path: the BMC says off
    soft = [l for l in log if 'HOST ALERT: dom0-1;DOWN;SOFT;1;' in l
            and int(re.match(r'\[(\d+)\]', l)[1]) >= int(t0)]
    assert soft and soft[0].endswith(
        f"XEN_HOST UNKNOWN - SSH to {ssh_where(nlab)}: "
        'connection refused (host down?)')
    assert any('HOST EVENT HANDLER: dom0-1;DOWN;SOFT;1;' in l for l in log)
    failover = svc(nlab, 'xen-cluster', 'failover')
    assert (failover['current_state'], failover['plugin_output']) == (
        '0', 'FAILOVER OK - dom0-1 failed over (fast path: its BMC said off at the first '
             'failed check): 2 domUs running: db1 on dom0-3, web1 on dom0-3')
    assert any('EXTERNAL COMMAND: SCHEDULE_FORCED_SVC_CHECK;web1;xen domain;' in l for l in log)
    steps = [(r['step'], r['message']) for r in journal(nlab) if r['dom0'] == 'dom0-1'
             and r['job'] and r['job'] != 'lab-setup']
    assert ('event', 'Nagios: dom0-1 is DOWN SOFT attempt 1: asking its BMC whether the '
                     'power is off (fast path)') in [(r['step'], r['message'])
                                                      for r in journal(nlab)]
    assert any(s == 'fence' and m.startswith('agent fence_ipmilan: confirmed') for s, m in steps)
    # the HARD state comes later and finds the work done
    wait('the HARD event', lambda: any('HOST EVENT HANDLER: dom0-1;DOWN;HARD;3;' in l
                                       for l in nagios.log_lines(nlab)), 60)
    soft_at = int(re.match(r'\[(\d+)\]', soft[0])[1])
    print(f'\nrecovery: power off -> all domU services OK in Nagios: {recovery:.1f}s '
          f'(first failed check after {soft_at - t0:.1f}s; host check 10s, the fast path)')
    (nlab.dir.parent / f'xenha-recovery-{nlab.block}.txt').write_text(f'{recovery:.1f}\n')


def test_crashed_domu_is_restarted_in_place(nlab):
    xensim.set_domain_state(dom0.state_dir(nlab, 'dom0-2'), 'mail1', 'crashed')
    wait('the service event handler restarting mail1',
         lambda: any(r['message'] == 'mail1 restarted on dom0-2 (restart 1 of 3 in 3600s)'
                     for r in journal(nlab)), 60)
    wait('mail1 OK again in Nagios', lambda: svc(nlab, 'mail1', 'xen domain')
         .get('current_state') == '0' and 'blocked on dom0-2' in
         svc(nlab, 'mail1', 'xen domain')['plugin_output'], 60)
    assert any('SERVICE EVENT HANDLER: mail1;xen domain;CRITICAL;HARD;' in l
               for l in nagios.log_lines(nlab))


def test_storage_down_no_restart_one_alert(nlab):
    from xenha_lab import storage
    storage.vblade_stop(nlab, 1, 2)              # build1's disk, e1.2
    xensim.set_domain_state(dom0.state_dir(nlab, 'dom0-2'), 'build1', 'crashed')
    refusal = ('not restarting build1: its storage is down (build1-disk: e1.2 is not up '
               'in aoe-stat)')
    wait('the refusal in the journal',
         lambda: any(r['message'] == refusal for r in journal(nlab)), 60)
    wait('the target service CRITICAL in Nagios',
         lambda: svc(nlab, 'san-1', 'target build1-disk').get('current_state') == '2', 60)
    time.sleep(3)
    ends = [r for r in journal(nlab) if r['domu'] == 'build1' and r['step'] == 'end']
    assert [r['message'] for r in ends] == [refusal]     # said once, not per check
    states = {d['name']: d['state'] for d in
              xensim.read(dom0.state_dir(nlab, 'dom0-2'))['domains']}
    assert states['build1'] == 'crashed'                 # nothing was attempted
    hard = 'SERVICE ALERT: san-1;target build1-disk;CRITICAL;HARD'
    wait('the target service HARD CRITICAL', lambda: any(
        hard in l for l in nagios.log_lines(nlab)), 90)
    time.sleep(2)
    assert len([l for l in nagios.log_lines(nlab) if hard in l]) == 1
    # and the restart was refused once, not once per check
    ends = [r for r in journal(nlab) if r['domu'] == 'build1' and r['step'] == 'end']
    assert [r['message'] for r in ends] == [refusal]
