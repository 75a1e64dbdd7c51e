"""`xenha render`: a target with `perf = true` gets an infrequent performance
service (`--perf`, and `--write` only on a target marked scratch), accepted by
the real nagios4 -v and icinga2 daemon -C; without perf targets nothing changes."""

from test_render import EXAMPLE, icinga_verify, nagios_verify, run_render

PERF = EXAMPLE.read_text().replace(
    'chap_secret_file = "/etc/xenha/chap-san-1.secret"\n\n[target.db1-disk]',
    'chap_secret_file = "/etc/xenha/chap-san-1.secret"\nperf = true\n\n[target.db1-disk]',
    1).replace(
    'slot = 1\ninterface = "eth1"\n',
    'slot = 1\ninterface = "eth1"\nperf = true\n', 1) + '''
[target.scratch-1]
kind = "iscsi"
storage = "san-1"
portal = "127.0.10.5:3260"
iqn = "iqn.2026-01.org.example.san-1:scratch"
lun = 1
scratch = true
perf = true
'''


def test_nagios_perf_services(tmp_path):
    assert PERF.count('perf = true') == 3
    inv = tmp_path / 'cluster.toml'
    inv.write_text(PERF)
    out = tmp_path / 'objects'
    r = run_render('--inventory', inv, '--format', 'nagios', '--output', out)
    assert r.returncode == 0, r.stderr
    text = (out / 'storage.cfg').read_text()
    services = [block for block in text.split('define service {')
                if 'performance' in block.split('\n}')[0]]
    assert len(services) == 3
    first = services[0]
    assert '    service_description             target web1-disk performance\n' in first
    assert '    check_interval                  60\n' in first      # 3600 s, in minutes
    assert ('    check_command                   check_target_perf!iscsi!-H 127.0.10.5 -p '
            '3260 --target iqn.2026-01.org.example.san-1:xen --lun 1 --chap-user xenha '
            '--chap-secret-file /etc/xenha/chap-san-1.secret\n') in first
    assert ('check_target_perf!aoe!--interface eth1 --shelf 1 --slot 1\n'
            in services[1])
    assert ('check_target_perf_write!iscsi!-H 127.0.10.5 -p 3260 --target '
            'iqn.2026-01.org.example.san-1:scratch --lun 1\n') in services[2]
    assert ('    command_line    $USER1$/check_$ARG1$_target $ARG2$ --perf --write '
            '--inventory $USER2$ -t 10\n') in text
    v = nagios_verify(tmp_path, out, 60)
    assert v.returncode == 0, v.stdout
    assert 'Things look okay' in v.stdout


def test_icinga2_perf_services(tmp_path):
    inv = tmp_path / 'cluster.toml'
    inv.write_text(PERF)
    out = tmp_path / 'objects'
    r = run_render('--inventory', inv, '--format', 'icinga2', '--output', out)
    assert r.returncode == 0, r.stderr
    text = (out / 'services.conf').read_text()
    assert text.count('check_command = "xenha-target-perf"') == 3
    assert f'  vars.xenha_perf_inventory = "{inv.resolve()}"\n' in text
    v = icinga_verify(tmp_path, out)
    assert v.returncode == 0, v.stdout + v.stderr
    assert 'Finished validating the configuration file(s).' in v.stdout


def test_no_perf_target_no_perf_service(tmp_path):
    out = tmp_path / 'objects'
    r = run_render('--inventory', EXAMPLE, '--format', 'all', '--output', out)
    assert r.returncode == 0, r.stderr
    assert 'performance' not in (out / 'nagios' / 'storage.cfg').read_text()
    assert 'xenha-target-perf' not in (out / 'icinga2' / 'services.conf').read_text()
