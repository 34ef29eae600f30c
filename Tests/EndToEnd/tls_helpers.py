"""A throw-away PKI made with the `openssl` command line, shared by the TLS tests (the `pki` fixture in
conftest.py): a CA, certificates for localhost/127.0.0.1 signed by it, and what clients need to trust it."""

import base64
import hashlib
import os
import ssl
import subprocess


def openssl(*args, cwd, input=None):
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, input=input).stdout


def make_cert(dir_, name, ca="ca", cn="localhost"):
    """A key and a certificate for localhost/127.0.0.1 signed by the CA in `dir_`."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=dir_)
    with open(os.path.join(dir_, f"{name}.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=dir_)


def make_pki(dir_):
    """In `dir_`: a CA (ca.pem), two server certificates (server.pem/.key, renewed.pem/.key) and an
    unrelated key (other.key)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=signal test CA", cwd=dir_)
    make_cert(dir_, "server", cn="localhost")
    make_cert(dir_, "renewed", cn="localhost")
    openssl("genrsa", "-out", "other.key", "2048", cwd=dir_)
    return dir_


def client_context(pki):
    """An SSL context that trusts the test CA only."""
    return ssl.create_default_context(cafile=str(pki / "ca.pem"))


def tls_args(pki, name="server"):
    """`signal serve` arguments for the certificate `name` of the test PKI."""
    return ["--tls-cert", str(pki / f"{name}.pem"), "--tls-key", str(pki / f"{name}.key")]


def spki_hash(cert_path):
    """Base64 SHA-256 of a certificate's SubjectPublicKeyInfo, as Chromium's
    `--ignore-certificate-errors-spki-list` takes it."""
    cwd = os.path.dirname(str(cert_path))
    public_key = openssl("x509", "-in", str(cert_path), "-noout", "-pubkey", cwd=cwd)
    der = openssl("pkey", "-pubin", "-outform", "der", cwd=cwd, input=public_key)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()
