"""check_iscsi_target - can the dom0s reach their iSCSI disks?

Three modes, one per place the question is asked:

portal (default)   a real login from here: SendTargets discovery, the target
                   offered, the LUN answers TEST UNIT READY / INQUIRY /
                   READ CAPACITY(16); CHAP with the secret from a file or
                   $ISCSI_CHAP_SECRET (never argv).  With --via DOM0 the
                   discovery runs on that dom0 over SSH (its own iscsiadm,
                   its own initiator name and ACL).
--initiator        on a dom0 (local, or -H over SSH): the session to the
                   target is logged in (`iscsiadm -m session -P 1`).
--server           on the storage node (local, or -H over SSH): targets ready,
                   LUNs online, backing stores present, ACLs, initiators
                   connected (`tgtadm --op show`).

  check_iscsi_target -H san1 --target iqn.2026-01.example:vm1 --lun 1 \\
      --initiator-name iqn.2026-01.example:monitor -w 0.5 -c 2 --min-capacity 10G
  check_iscsi_target --initiator -H dom0-1 -i KEY --known-hosts FILE --target IQN
  check_iscsi_target --server -H san1 -i KEY --known-hosts FILE

A portal that refuses or does not answer, a refused login, a missing target,
an offline target or LUN are CRITICAL; UNKNOWN means the check could not
decide (bad options, unreadable secret, unparseable output, SSH trouble).
"""

import logging
import os
import shlex
import time

import nagiosplugin

from xenha import plugin
from xenha.checks import status
from xenha.storage import iscsi

_log = logging.getLogger('nagiosplugin')


def _n(count, word):
    return f'{count} {word}{"s" if count != 1 else ""}'


def _mib(n):
    return f'{n / 1024 ** 2:.1f}MiB' if n < 1024 ** 3 else f'{n / 1024 ** 3:.1f}GiB'


# --- acquisition ------------------------------------------------------------------
class IscsiTarget(nagiosplugin.Resource):
    """Base: `self.problem` is the CRITICAL reason (None when healthy)."""

    problem = None
    text = ''

    def __init__(self, args):
        self.args = args

    @property
    def name(self):
        return 'ISCSI_TARGET'

    @property
    def verdict(self):
        if self.problem is None:
            return nagiosplugin.Ok, self.text
        return nagiosplugin.Critical, self.problem

    def runner(self, host):
        from xenha.runner import SSHOptions, make_runner
        a = self.args
        opts = SSHOptions(user=a.logname, port=a.ssh_port, identity=a.identity,
                          known_hosts=a.known_hosts,
                          accept_new_host_key=a.ssh_accept_new_host_key, sudo=a.sudo)
        return make_runner(host, opts, a.timeout)

    def run(self, host, argv):
        """Run argv on `host` (None: here); could-not-run is UNKNOWN."""
        from xenha.runner import RunnerError
        _log.info('running %s on %s', shlex.join(argv), host or 'localhost')
        try:
            with self.runner(host) as r:
                return r.run(argv, timeout=io_timeout(self.args))
        except RunnerError as exc:
            raise nagiosplugin.CheckError(plugin.describe(exc)) from None

    def probe(self):
        # measure() first: the status metric is evaluated as soon as it is
        # yielded, and it reads the problem/text that measuring sets
        metrics = list(self.measure())
        yield nagiosplugin.Metric('status', 0 if self.problem is None else 1,
                                  context='status')
        yield from metrics


class Portal(IscsiTarget):
    """A real login from the monitoring node."""

    def measure(self):
        a = self.args
        portal = iscsi.Portal(a.hostname, a.port)
        started = time.monotonic()
        secret = chap(a)
        try:
            res = iscsi.probe(portal, a.target, a.lun, a.initiator_name, secret,
                              io_timeout(a), secret if a.chap_discovery else None,
                              pr=a.verbose > 0 and a.target is not None)
        except iscsi.ProtocolError as exc:
            raise nagiosplugin.CheckError(str(exc)) from None
        except iscsi.IscsiError as exc:
            self.problem = str(exc)
            return
        total = time.monotonic() - started
        _log.info('offered: %s', ', '.join(res.targets) or 'none')
        yield nagiosplugin.Metric('connect_time', round(res.connect_time, 6), 's', min=0,
                                  context='default')
        yield nagiosplugin.Metric('total_time', round(total, 6), 's', min=0,
                                  context='default')
        if a.target is None:
            self.text = (f'{portal}: {_n(len(res.targets), "target")} offered to '
                         f'{a.initiator_name}')
            yield nagiosplugin.Metric('targets', len(res.targets), min=0,
                                      context='default')
            return
        lun = res.lun
        log_reservations(res)
        self.text = (f'{a.target} LUN {a.lun} at {portal}: {lun.vendor} {lun.product}, '
                     f'{_mib(lun.capacity)}, {_n(len(res.luns), "LUN")}')
        yield nagiosplugin.Metric('login_time', round(res.login_time, 6), 's', min=0,
                                  context='login_time')
        yield nagiosplugin.Metric('capacity', lun.capacity, 'B', min=0,
                                  context='capacity')
        yield nagiosplugin.Metric('luns', len(res.luns), min=0, context='default')


def log_reservations(res):
    """-v: the LUN's persistent-reservation state (what storage fencing
    uses; -v is nagiosplugin's WARNING level)."""
    if res.pr_error:
        _log.warning('persistent reservations: not readable (%s)', res.pr_error)
    elif res.keys is not None:
        keys = ', '.join(map(iscsi.key_text, res.keys)) or 'none'
        r = res.reservation
        held = (f'{r.type_name}, held by {iscsi.key_text(r.key)}' if r and r.held
                else 'none')
        _log.warning('registrations: %s; reservation: %s', keys, held)


class Via(IscsiTarget):
    """SendTargets discovery run by a dom0's own iscsiadm over SSH."""

    def measure(self):
        a = self.args
        portal = iscsi.Portal(a.hostname, a.port)
        started = time.monotonic()
        r = self.run(a.via, iscsi.discovery_command(portal))
        took = time.monotonic() - started
        offered = {}
        for line in r.out.splitlines():
            parts = line.split()
            if len(parts) == 2 and ',' in parts[0]:
                offered[parts[1]] = parts[0]
        where = f'{portal} from {a.via}'
        reason = r.reason().removeprefix('iscsiadm: ')
        if r.exit == 0:
            if not offered:
                raise nagiosplugin.CheckError(
                    f'cannot parse iscsiadm discovery output: {reason}')
            if a.target and a.target not in offered:
                self.problem = (f'{a.target} not offered by {where} (missing, or '
                                f'that initiator is not in its ACL)')
            else:
                self.text = (f'{a.target} offered by {where}' if a.target else
                             f'{where}: {_n(len(offered), "target")} offered')
        elif r.exit == 21:               # ISCSI_ERR_NO_OBJS_FOUND
            self.problem = f'{where}: no targets offered ({reason})'
        elif r.exit in (4, 5, 8, 19, 24):  # connection, login, timeout, auth
            self.problem = f'discovery of {where} failed: {reason}'
        else:
            raise nagiosplugin.CheckError(f'iscsiadm on {a.via} failed: {reason}')
        yield nagiosplugin.Metric('discovery_time', round(took, 6), 's', min=0,
                                  context='login_time')


class Initiator(IscsiTarget):
    """Session state on a dom0 (`iscsiadm -m session -P 1`)."""

    def measure(self):
        a = self.args
        where = a.hostname or 'localhost'
        r = self.run(a.hostname, iscsi.session_command())
        if r.exit == 21:                 # ISCSI_ERR_NO_OBJS_FOUND
            sessions = []
        elif r.exit:
            raise nagiosplugin.CheckError(f'iscsiadm on {where} failed: {r.reason()}')
        else:
            try:
                sessions = iscsi.parse_session_tree(r.out)
            except ValueError as exc:
                raise nagiosplugin.CheckError(f'cannot parse iscsiadm output: {exc}')
        if a.target:
            sessions = [s for s in sessions if s.target == a.target]
        if a.portal_filter:
            p = iscsi.Portal.parse(a.portal_filter)
            sessions = [s for s in sessions if s.portal == p]
        bad = [s for s in sessions if not s.logged_in]
        for s in sessions:
            _log.info('sid %s %s %s: %s / %s', s.sid, s.target, s.portal,
                      s.connection, s.session)
        what = a.target or 'any target'
        if not sessions:
            self.problem = f'{where}: no iSCSI session to {what}'
        elif bad:
            self.problem = f'{where}: ' + '; '.join(
                f'session {s.sid} to {s.target} at {s.portal} is {s.session} '
                f'(connection {s.connection})' for s in bad)
        else:
            self.text = (f'{where}: {_n(len(sessions), "session")} logged in'
                         f' ({", ".join(sorted({s.target for s in sessions}))})')
        yield nagiosplugin.Metric('sessions', len(sessions), min=0, context='default')
        yield nagiosplugin.Metric('logged_in', len(sessions) - len(bad), min=0,
                                  context='default')


class Server(IscsiTarget):
    """tgt's own view on the storage node."""

    def measure(self):
        a = self.args
        where = a.hostname or 'localhost'
        argv = shlex.split(a.tgtadm_command)
        if a.control_port is not None:
            argv += ['-C', str(a.control_port)]
        r = self.run(a.hostname, argv + ['--lld', 'iscsi', '--mode', 'target',
                                          '--op', 'show'])
        if r.exit:
            self.problem = f'tgtd on {where} does not answer: {r.reason()}'
            return
        try:
            targets = iscsi.parse_tgtadm_show(r.out)
        except ValueError as exc:
            raise nagiosplugin.CheckError(f'cannot parse tgtadm output: {exc}')
        if a.target:
            targets = [t for t in targets if t.name == a.target]
        problems = self.judge(targets, where)
        if problems:
            self.problem = f'{where}: ' + '; '.join(problems)
        else:
            luns = sum(len(t.disks) for t in targets)
            conns = sum(len(t.initiators) for t in targets)
            self.text = (f'{where}: {_n(len(targets), "target")} ready, '
                         f'{_n(luns, "LUN")} online, {_n(conns, "initiator session")}')
        yield nagiosplugin.Metric('targets', len(targets), min=0, context='default')
        yield nagiosplugin.Metric('luns', sum(len(t.disks) for t in targets), min=0,
                                  context='default')
        yield nagiosplugin.Metric('sessions', sum(len(t.initiators) for t in targets),
                                  min=0, context='default')

    def judge(self, targets, where):
        a = self.args
        if not targets:
            return [f'target {a.target} is not configured' if a.target
                    else 'no targets configured']
        problems, paths = [], []
        for t in targets:
            _log.info('%s: %s, %d LUNs, ACL %s, sessions %s', t.name, t.state,
                      len(t.disks), t.acls, t.initiators)
            if t.state != 'ready':
                problems.append(f'target {t.name} is {t.state}')
            for lun in t.disks:
                if not lun.online:
                    problems.append(f'LUN {lun.lun} of {t.name} is offline')
                if lun.backing_path.startswith('/'):
                    paths.append(lun.backing_path)
            if not t.acls:
                problems.append(f'target {t.name} has no ACL (nobody may log in)')
            for who in a.expect_initiator:
                if who not in t.acls and 'ALL' not in t.acls:
                    problems.append(f'{who} is not in the ACL of {t.name}')
        if paths:
            r = self.run(a.hostname, ['stat', '--format=%n', '--', *paths])
            if r.exit:
                missing = [p for p in paths if p not in r.out.splitlines()]
                problems += [f'backing store {p} is missing' for p in missing]
        return problems


# --- main -----------------------------------------------------------------------------
def io_timeout(args):
    """Our own socket/command timeout, below -t so the message names what hung."""
    return max(args.timeout - 0.5, args.timeout * 0.8)


def chap(args):
    if not args.chap_user:
        return None
    secret = os.environ.get('ISCSI_CHAP_SECRET')
    if args.chap_secret_file:
        try:
            return iscsi.Chap.from_file(args.chap_user, args.chap_secret_file)
        except OSError as exc:
            raise nagiosplugin.CheckError(
                f'cannot read CHAP secret file {args.chap_secret_file}: '
                f'{exc.strerror or exc}') from None
        except UnicodeDecodeError:
            raise nagiosplugin.CheckError(
                f'cannot read CHAP secret file {args.chap_secret_file}: not text '
                '(not UTF-8)') from None
    if not secret:
        raise nagiosplugin.CheckError('--chap-user needs --chap-secret-file or '
                                      '$ISCSI_CHAP_SECRET')
    return iscsi.Chap(args.chap_user, secret)



def parse_args(argv=None):
    from xenha.checks import storage_perf
    p = plugin.ArgumentParser('ISCSI_TARGET', __doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument('--initiator', action='store_true',
                      help='check the session state on a dom0 (-H over SSH, or local)')
    mode.add_argument('--server', action='store_true',
                      help='check tgtd on the storage node (-H over SSH, or local)')
    p.add_argument('-H', '--hostname', metavar='HOST',
                   help='portal mode: the portal address; --initiator/--server: '
                        'the host to SSH to (none: local)')
    p.add_argument('-p', '--port', type=plugin.port_arg, default=iscsi.DEFAULT_PORT,
                   help='portal TCP port (default 3260)')
    p.add_argument('--target', metavar='IQN', help='the target that must be served')
    p.add_argument('--lun', type=lun_arg, default=1, help='LUN to probe (default 1)')
    p.add_argument('--initiator-name', metavar='IQN', default=iscsi.DEFAULT_INITIATOR,
                   help=f'our initiator name (ACLs); default {iscsi.DEFAULT_INITIATOR}')
    p.add_argument('--chap-user', metavar='USER', help='CHAP user name')
    p.add_argument('--chap-secret-file', metavar='FILE',
                   help='file holding the CHAP secret (else $ISCSI_CHAP_SECRET)')
    p.add_argument('--chap-discovery', action='store_true',
                   help='use CHAP for the discovery session too')
    p.add_argument('-w', '--warning', metavar='RANGE', default='',
                   type=storage_perf.threshold_arg,
                   help='login time range in seconds (portal mode), e.g. 0.5; --perf: read throughput in B/s, e.g. 100M:')
    p.add_argument('-c', '--critical', metavar='RANGE', default='',
                   type=storage_perf.threshold_arg,
                   help='login time range in seconds, e.g. 2; --perf: read throughput in B/s, e.g. 20M:')
    p.add_argument('--min-capacity', metavar='SIZE',
                   help='CRITICAL when the LUN is smaller (e.g. 10G)')
    p.add_argument('--via', metavar='DOM0',
                   help='portal mode: run the discovery on this dom0 over SSH')
    p.add_argument('--portal', dest='portal_filter', metavar='ADDR[:PORT]',
                   help='--initiator: only sessions to this portal')
    p.add_argument('--tgtadm-command', default='tgtadm', metavar='CMD',
                   help="--server: argv prefix, e.g. 'sudo -n tgtadm'")
    p.add_argument('--control-port', type=plugin.port_arg, metavar='N',
                   help='--server: tgtd control port (tgtadm -C N)')
    p.add_argument('--expect-initiator', action='append', default=[], metavar='IQN',
                   help='--server: this initiator must be in the ACL (repeatable)')
    g = p.add_argument_group('SSH (--via, and -H with --initiator/--server)')
    g.add_argument('--ssh-port', type=plugin.port_arg, default=22,
                   help='SSH port (default 22)')
    g.add_argument('-l', '--logname', default='root', metavar='USER')
    g.add_argument('-i', '--identity', metavar='KEYFILE')
    g.add_argument('--known-hosts', metavar='FILE')
    g.add_argument('--ssh-accept-new-host-key', action='store_true')
    g.add_argument('--sudo', action='store_true', help="prefix commands with 'sudo -n'")
    plugin.add_common_arguments(p)
    storage_perf.add_arguments(p)
    args = p.parse_args(argv)
    if not (args.initiator or args.server) and not args.hostname:
        p.error('portal mode needs -H PORTAL')
    if args.perf and (args.initiator or args.server or args.via):
        p.error('--perf is a portal-mode check (a real login from here)')
    storage_perf.check_arguments(p, args)
    if args.min_capacity:
        try:
            args.min_capacity = plugin.parse_size(args.min_capacity)
        except ValueError as exc:
            p.error(str(exc))
    for name in ('target', 'initiator_name'):
        from xenha import grammar
        value = getattr(args, name)
        if value is not None and grammar.iqn(value):
            p.error(f'--{name.replace("_", "-")}: {grammar.iqn(value)}')
    return args


def lun_arg(text):
    import argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a LUN: {text!r}') from None
    if not 0 <= value <= 16383:
        raise argparse.ArgumentTypeError(f'a LUN is 0 to 16383, not {text!r}')
    return value


@nagiosplugin.guarded      # under plugin.run in the installed command
def main():
    args = parse_args()
    if args.perf:
        from xenha.checks import storage_perf
        storage_perf.check(storage_perf.IscsiPerf(args, chap, io_timeout), args).main(
            verbose=args.verbose, timeout=args.timeout)
        return
    if args.initiator:
        resource = Initiator(args)
    elif args.server:
        resource = Server(args)
    elif args.via:
        resource = Via(args)
    else:
        resource = Portal(args)
    check = nagiosplugin.Check(
        resource, status.Status('status'),
        nagiosplugin.ScalarContext('login_time', args.warning, args.critical,
                                   fmt_metric='login took {valueunit}'),
        nagiosplugin.ScalarContext('capacity', critical=f'{args.min_capacity}:'
                                   if args.min_capacity else None,
                                   fmt_metric='capacity {valueunit}'),
        status.StatusSummary())
    check.name = 'ISCSI_TARGET'
    check.main(verbose=args.verbose, timeout=args.timeout)


if __name__ == '__main__':
    main()
