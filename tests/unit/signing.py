"""Reports signed as a host's detector signs them, with the key the master would hand it
(a real key store under the test's ledger directory)."""
import mailfleet_report as rep


def key_of(opts, host):
    return rep.KeyStore(rep.key_dir(opts, opts["mailfleet_ledger"])).ensure(host)


def signed(opts, tag, payload, signer=None):
    """``payload`` signed with the key of ``signer`` (default: the host it names)."""
    return rep.sign(key_of(opts, signer or payload["host"]), tag, payload)
