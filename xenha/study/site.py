"""The study on a site's own targets: only those the inventory marks
`scratch = true` (a disk no guest uses), because every client writes over
the first S MiB of its disk.  The target's CPU is not measured (it runs on
another machine); throughput, latency, retransmits and stalls are."""

from __future__ import annotations

import dataclasses
import os

from xenha.study.run import Options, StudyError


class SiteTargets:
    where = 'site'
    pinning = None

    def __init__(self, opts: Options, targets: dict):
        self.opts = opts
        self.targets = targets            # protocol -> [inventory Target]

    @classmethod
    def from_inventory(cls, path: str | None, names: list[str], opts: Options):
        from xenha import inventory
        if not path or not names:
            raise StudyError('a site study needs --inventory FILE and at least one '
                             '--target NAME (marked scratch = true)')
        try:
            cluster = inventory.load(path)
        except inventory.InventoryError as exc:
            raise StudyError('; '.join(str(e) for e in exc.errors)) from None
        except OSError as exc:
            raise StudyError(f'cannot read {path}: {exc.strerror}') from None
        chosen: dict[str, list] = {}
        for name in names:
            t = cluster.targets.get(name)
            if t is None:
                raise StudyError(f'no target {name!r} in {path}')
            if not t.scratch:
                users = [u.name for u in cluster.domus.values() if name in u.targets]
                why = f' (disk of {", ".join(users)})' if users else ''
                raise StudyError(f'refusing to use target {name}{why}: it is not marked '
                                 f'scratch = true in {path}, and the study writes over '
                                 f'its disk')
            in_use = [u.name for u in cluster.domus.values() if name in u.targets]
            if in_use:
                raise StudyError(f'refusing to use target {name}: marked scratch but '
                                 f'listed as a disk of {", ".join(in_use)} in {path}')
            chosen.setdefault(t.kind, []).append(t)
        protocols = tuple(p for p in opts.protocols if p in chosen)
        if not protocols:
            raise StudyError('none of the targets named is of the protocols asked for')
        most = min(len(chosen[p]) for p in protocols)
        clients = tuple(n for n in opts.clients if n <= most) or (most,)
        secret = {}
        for t in chosen.get('iscsi', []):
            if t.chap_user:
                with open(t.chap_secret_file, encoding='utf-8') as fh:
                    secret[t.name] = fh.read().strip()
        opts = dataclasses.replace(opts, protocols=protocols, clients=clients, pin=False)
        site = cls(opts, chosen)
        site.secrets = secret
        return site

    def close(self) -> list[str]:
        return []

    def up(self, protocol: str, n: int, size: int) -> dict:
        self.protocol = protocol
        return {}

    def down(self) -> None:
        pass

    def jobs(self, n, size, record, seed):
        o = self.opts
        jobs = []
        for k, t in enumerate(self.targets[self.protocol][:n]):
            base = {'size': size, 'record': record, 'depth': o.depth, 'seed': seed + k,
                    'cpu': None}
            if t.kind == 'iscsi':
                base.update(protocol='iscsi', portal=t.host, port=t.port, target=t.iqn,
                            lun=t.lun, initiator=f'iqn.2026-01.org.xenha:study-{k}')
                if t.chap_user:
                    base.update(chap_user=t.chap_user, chap_secret=self.secrets[t.name])
            else:
                base.update(protocol='aoe', interface=t.interface, shelf=t.shelf,
                            slot=t.slot, policy=o.policy, deadline=o.phase_limit)
            jobs.append(base)
        return jobs, None

    def snapshot(self) -> dict:
        return {'cpu': {'procs': {}, 'threads': {}}, 'socket_drops': None,
                'link_drops': None, 'pid': os.getpid()}
