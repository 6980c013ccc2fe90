"""Test certificates and keys, made at test time with GnuTLS's certtool into
a temporary directory (never committed), laid out as QEMU's tls-creds-x509
reads a dir: ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
client-key.pem; and keys.psk for tls-creds-psk.

    pki = Pki()                          # a CA of its own
    pki.x509_dir("server", "dst")        # ca + server cert for localhost/127.0.0.1
    pki.x509_dir("client", "src")        # ca + client cert (DN CLIENT_DN)
    Pki().x509_dir(...)                  # another CA: its certificates fail here
    pki.x509_dir("server", "old", validity=EXPIRED)
    psk_dir(path, "godwit", KEY)

ECDSA keys: certtool makes them in milliseconds where RSA takes seconds."""
import os
import shutil
import subprocess
import tempfile

CERTTOOL = shutil.which("certtool")
CLIENT_DN = "O=godwit,CN=godwit-client"
EXPIRED = ("2020-01-01 00:00:00 UTC", "2020-06-01 00:00:00 UTC")
NOT_YET_VALID = ("2099-01-01 00:00:00 UTC", "2100-01-01 00:00:00 UTC")


def certtool_skip_reason():
    return None if CERTTOOL else "certtool (gnutls-bin) is not installed: scripts/setup-deps"


def _certtool(*args):
    done = subprocess.run([CERTTOOL, *args], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"certtool {' '.join(args)} failed: {done.stderr.strip()}")


def _validity(validity):
    if validity is None:
        return "expiration_days = 2\n"
    begin, end = validity
    return f'activation_date = "{begin}"\nexpiration_date = "{end}"\n'


class Pki:
    """A CA in a temporary directory, and the certificates it signs."""

    def __init__(self, name="godwit test CA"):
        self.dir = tempfile.mkdtemp(prefix="godwit-pki-")
        self.ca_key = self._key("ca-key.pem")
        self.ca_cert = os.path.join(self.dir, "ca-cert.pem")
        template = self._template("ca.info", f'cn = "{name}"\nca\ncert_signing_key\n'
                                  "expiration_days = 2\n")
        _certtool("--generate-self-signed", "--load-privkey", self.ca_key,
                  "--template", template, "--outfile", self.ca_cert)

    def _key(self, name):
        path = os.path.join(self.dir, name)
        _certtool("--generate-privkey", "--key-type", "ecdsa", "--outfile", path)
        return path

    def _template(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def x509_dir(self, endpoint, name, hostname="localhost", validity=None,
                 with_own_cert=True, cn="godwit-client"):
        """A dir for a tls-creds-x509 object: this CA, and (with_own_cert)
        a certificate for the endpoint, signed by this CA (a client's DN:
        O=godwit,CN=cn)."""
        path = os.path.join(self.dir, name)
        os.makedirs(path)
        shutil.copy(self.ca_cert, os.path.join(path, "ca-cert.pem"))
        if not with_own_cert:
            return path
        key = self._key(f"{name}-key.pem")
        if endpoint == "server":
            text = (f'organization = "godwit"\ncn = "{hostname}"\ndns_name = "{hostname}"\n'
                    'ip_address = "127.0.0.1"\ntls_www_server\n')
        else:
            text = f'organization = "godwit"\ncn = "{cn}"\ntls_www_client\n'
        template = self._template(f"{name}.info", text + "encryption_key\nsigning_key\n" +
                                  _validity(validity))
        _certtool("--generate-certificate", "--load-privkey", key,
                  "--load-ca-certificate", self.ca_cert, "--load-ca-privkey", self.ca_key,
                  "--template", template, "--outfile", os.path.join(path, f"{endpoint}-cert.pem"))
        shutil.copy(key, os.path.join(path, f"{endpoint}-key.pem"))
        return path

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def psk_dir(parent, name, username, key_hex):
    path = os.path.join(parent, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "keys.psk"), "w") as f:
        f.write(f"{username}:{key_hex}\n")
    return path
