"""Storage without daemons: iSCSI PDU helpers, AoE frames, and the parsers
of real `iscsiadm`, `tgtadm` and `aoe-stat` output (tests/fixtures/storage)."""

import hashlib
import struct
from pathlib import Path

import pytest

from xenha.storage import aoe, iscsi
from xenha_lab import initiators

pytestmark = pytest.mark.unit

FIX = Path(__file__).parent / 'fixtures' / 'storage'


def fixture(name):
    return (FIX / name).read_text()


# --- iSCSI codec ----------------------------------------------------------------------
def test_pdu_header_is_48_bytes_with_24_bit_length_and_padding():
    rest = b'\0\0' + b'\x11' * 40
    raw = iscsi.pdu(0x43, 0x87, rest, b'abcde')
    assert len(raw) == 48 + 8
    assert raw[:2] == b'\x43\x87'
    assert raw[4] == 0 and int.from_bytes(raw[5:8], 'big') == 5
    assert raw[8:48] == b'\x11' * 40
    assert raw[48:53] == b'abcde' and raw[53:] == b'\0\0\0'


def test_pdu_rejects_a_short_header():
    with pytest.raises(ValueError):
        iscsi.pdu(0x01, 0, b'\0' * 10)


def test_text_keys_round_trip():
    data = iscsi.encode_keys({'InitiatorName': 'iqn.x:y', 'AuthMethod': 'CHAP,None'})
    assert data == b'InitiatorName=iqn.x:y\0AuthMethod=CHAP,None\0'
    assert iscsi.decode_keys(data) == [('InitiatorName', 'iqn.x:y'),
                                       ('AuthMethod', 'CHAP,None')]


@pytest.mark.parametrize('lun', [0, 1, 255, 256, 16383])
def test_lun_encoding_round_trip(lun):
    raw = iscsi.lun_field(lun)
    assert len(raw) == 8
    assert iscsi.decode_lun(raw) == lun


def test_chap_response_is_md5_of_id_secret_challenge():
    challenge = bytes(range(16))
    assert iscsi.chap_response(7, 'secret', challenge) == \
        hashlib.md5(b'\x07secret' + challenge).digest()


def test_chap_secret_stays_out_of_repr(tmp_path):
    f = tmp_path / 'secret'
    f.write_text('s3cr3t-value\n')
    chap = iscsi.Chap.from_file('user', str(f))
    assert chap.secret == 's3cr3t-value'
    assert 's3cr3t' not in repr(chap)


@pytest.mark.parametrize('sense, expected', [
    (bytes([0x70, 0, 0x02]) + b'\0' * 9 + bytes([0x04, 0x01]), (2, 0x04, 0x01)),
    (bytes([0x72, 0x05, 0x25, 0x00]), (5, 0x25, 0)),
    (b'', (0, 0, 0)),
])
def test_sense_fixed_and_descriptor(sense, expected):
    assert iscsi.parse_sense(sense) == expected


@pytest.mark.parametrize('text, host, port', [
    ('127.0.10.5', '127.0.10.5', 3260), ('127.0.10.5:3261', '127.0.10.5', 3261),
    ('127.0.10.5:3260,1', '127.0.10.5', 3260), ('127.0.10.5,1', '127.0.10.5', 3260),
])
def test_portal_forms(text, host, port):
    assert iscsi.Portal.parse(text) == iscsi.Portal(host, port)


# --- iscsiadm -m session -P 1 / -P 3 -----------------------------------------------------
def test_session_tree_two_sessions_under_one_portal_and_a_failed_one():
    s = iscsi.parse_session_tree(fixture('iscsiadm_session_P1_two_sessions_one_failed.txt'))
    assert [(x.sid, x.target.rsplit(':', 1)[1], str(x.portal), x.iface, x.logged_in)
            for x in s] == [
        (3, 'vm-web1', '127.0.10.5:3260', 'default', True),
        (4, 'vm-web1', '127.0.10.5:3260', 'iface1', True),
        (5, 'vm-db1', '127.0.10.6:3260', 'default', False)]
    assert (s[2].connection, s[2].session) == ('TRANSPORT WAIT', 'FAILED')


def test_session_tree_print_level_3_of_an_older_open_iscsi():
    s = iscsi.parse_session_tree(fixture('iscsiadm_session_P3_centos7_logged_in.txt'))
    assert len(s) == 1
    assert (s[0].sid, s[0].target, s[0].initiator, s[0].logged_in) == (
        10, 'iqn.2026-01.example.san:vm-web1', 'iqn.1994-05.com.redhat:78bcc', True)


def test_session_tree_of_the_lab_stand_in_matches_the_real_layout():
    s = iscsi.parse_session_tree(fixture('standin_session_P1.txt'))
    assert [x.sid for x in s] == [1, 2] and all(x.logged_in for x in s)


def test_session_tree_garbage_is_an_error():
    with pytest.raises(ValueError):
        iscsi.parse_session_tree('\t\tSID: 1\n')


def test_device_ready_needs_that_target_logged_in_at_that_portal():
    text = fixture('iscsiadm_session_P1_two_sessions_one_failed.txt')
    web = 'iqn.2026-01.example.san:vm-web1'
    db = 'iqn.2026-01.example.san:vm-db1'
    assert iscsi.device_ready(text, iscsi.Portal('127.0.10.5'), web)
    assert not iscsi.device_ready(text, iscsi.Portal('127.0.10.6'), web)
    assert not iscsi.device_ready(text, iscsi.Portal('127.0.10.6'), db)
    assert not iscsi.device_ready('garbage', iscsi.Portal('127.0.10.5'), web)


def test_login_commands_are_argv_lists_without_secrets():
    p = iscsi.Portal('127.0.10.5')
    assert iscsi.login_commands(p, 'iqn.x:disk1') == [
        ['iscsiadm', '-m', 'discovery', '-t', 'sendtargets', '-p', '127.0.10.5:3260'],
        ['iscsiadm', '-m', 'node', '-T', 'iqn.x:disk1', '-p', '127.0.10.5:3260',
         '--login']]
    assert iscsi.login_ok(0) and iscsi.login_ok(15) and not iscsi.login_ok(24)
    assert iscsi.device_path(p, 'iqn.x:disk1', 1) == \
        '/dev/disk/by-path/ip-127.0.10.5:3260-iscsi-iqn.x:disk1-lun-1'


# --- tgtadm --op show --------------------------------------------------------------------
def test_tgtadm_show_targets_luns_acls_sessions():
    t = iscsi.parse_tgtadm_show(fixture('tgtadm_show_two_targets_sessions.txt'))
    assert [(x.tid, x.name, x.state) for x in t] == [
        (1, 'iqn.2026-01.lab.xenha:disk1', 'ready'),
        (2, 'iqn.2026-01.lab.xenha:disk2', 'ready')]
    assert [(lun.lun, lun.type, lun.size_mb, lun.online) for lun in t[0].luns] == [
        (0, 'controller', 0, True), (1, 'disk', 67, True)]
    assert t[0].disks[0].backing_path == '/srv/lab/storage/lun-1-1.img'
    assert t[0].acls == ['iqn.2026-01.lab.xenha:dom0-1', 'iqn.2026-01.lab.xenha:dom0-2',
                         'iqn.2026-01.lab.xenha:monitor']
    assert t[0].initiators == ['iqn.2026-01.lab.xenha:dom0-1',
                               'iqn.2026-01.lab.xenha:dom0-2']
    assert (t[1].accounts, t[1].acls) == (['xenha'], ['ALL'])


def test_tgtadm_show_offline_states():
    t = iscsi.parse_tgtadm_show(fixture('tgtadm_show_lun_and_target_offline.txt'))
    assert t[0].state == 'ready' and not t[0].disks[0].online
    assert t[1].state == 'offline' and t[1].disks[0].online


def test_tgtadm_show_garbage_is_an_error():
    with pytest.raises(ValueError):
        iscsi.parse_tgtadm_show('tgtadm: something odd\n')


# --- AoE frames ---------------------------------------------------------------------------
SRC = bytes.fromhex('020000000001')
DST = bytes.fromhex('020000000002')


def test_query_config_frame_layout():
    raw = aoe.query_config(SRC, 1, 2, 0x01020304).encode()
    assert len(raw) == 60                               # padded to the minimum
    assert raw[:6] == b'\xff' * 6 and raw[6:12] == SRC
    assert raw[12:14] == b'\x88\xa2'
    assert raw[14] == 0x10 and raw[15] == 0             # version 1, no flags
    assert struct.unpack('>HBBI', raw[16:24]) == (1, 2, aoe.CMD_QUERY, 0x01020304)
    assert raw[24:32] == b'\0' * 8                      # read config, empty string


def test_query_config_reply_decodes():
    arg = struct.pack('>HHBBH', 16, 0x4019, 2, 0x10, 4) + b'fset'
    reply = aoe.Frame(SRC, DST, 1, 2, aoe.CMD_QUERY, 99, flags=aoe.FLAG_RESPONSE,
                      arg=arg).encode()
    f = aoe.Frame.decode(reply)
    assert (f.response, f.shelf, f.slot, f.tag, f.src) == (True, 1, 2, 99, DST)
    c = aoe.decode_config(f.arg)
    assert (c.bufcnt, c.firmware, c.sectors, c.aoe_version, c.config) == (
        16, 0x4019, 2, 1, b'fset')


def test_ata_identify_request_and_reply():
    raw = aoe.ata_identify(SRC, DST, 1, 2, 5).encode()
    assert raw[:6] == DST and raw[19] == aoe.CMD_ATA
    assert raw[24:28] == bytes([0, 0, 1, aoe.ATA_IDENTIFY])
    words = [0] * 256
    model = b'Coraid EtherDrive vblade'.ljust(40)
    for i in range(20):                       # ATA strings: byte pairs swapped
        words[27 + i] = model[2 * i] << 8 | model[2 * i + 1]
    words[83] = 1 << 10                       # LBA48
    words[100], words[101] = 32768 & 0xffff, 32768 >> 16
    arg = bytes([0, 0, 0, 0x40]) + b'\0' * 8 + struct.pack('<256H', *words)
    ident = aoe.decode_identify(arg)
    assert (ident.model, ident.sectors, ident.size) == (
        'Coraid EtherDrive vblade', 32768, 16 * 1024 * 1024)


def test_identify_error_status_and_short_frames_are_bad():
    with pytest.raises(aoe.BadFrame):
        aoe.decode_identify(bytes([0, 0, 0, 0x41]) + b'\0' * 520)
    with pytest.raises(aoe.BadFrame):
        aoe.Frame.decode(b'\0' * 10)
    with pytest.raises(aoe.BadFrame):
        aoe.Frame.decode(b'\0' * 12 + b'\x08\x00' + b'\0' * 46)   # IPv4, not AoE


# --- aoe-stat --------------------------------------------------------------------------------
def test_aoe_stat_with_payload_column():
    d = aoe.parse_aoe_stat(fixture('aoe_stat_payload.txt'))
    assert [(x.name, x.size, x.netif, x.payload, x.state, x.up) for x in d] == [
        ('e1.2', '0.016GB', 'san0', '1024', 'up', True),
        ('e1.3', '4398.046GB', 'eth1', '8704', 'down', False),
        ('e20.0', '(NA)', 'eth1', '(NA)', 'up', True)]
    assert d[1].size_bytes == 4398046000000 and d[2].size_bytes is None


def test_aoe_stat_old_driver_without_payload():
    d = aoe.parse_aoe_stat(fixture('aoe_stat_no_payload.txt'))
    assert [(x.name, x.state, x.up) for x in d] == [
        ('e0.3', 'up', True), ('e0.4', 'down,closewait', False)]


def test_aoe_stat_format_is_what_the_script_prints():
    devs = aoe.parse_aoe_stat(fixture('aoe_stat_payload.txt'))
    assert initiators.format_aoe_stat(devs) == fixture('aoe_stat_payload.txt')
    assert initiators.gb_text(16 * 1024 * 1024) == '0.016GB'


def test_aoe_device_ready():
    text = fixture('aoe_stat_payload.txt')
    assert aoe.device_ready(text, 1, 2)
    assert not aoe.device_ready(text, 1, 3)
    assert not aoe.device_ready(text, 9, 9)
    assert aoe.discover_commands() == [['aoe-discover']]
    assert aoe.device_path(1, 2) == '/dev/etherd/e1.2'
