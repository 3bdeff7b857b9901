# SPDX-License-Identifier: Apache-2.0
# An independent guest-side client for the dstack-kms integration tests (run with the Debian
# python3: cryptography + pycryptodomex). It does what dstack-util does at boot, from scratch:
# GetTempCaCert, a quote from a dstack-tee-sim TD over SHA-512("ratls-cert:" || SPKI), a V0
# VersionedAttestation (SCALE) around it, an RA-TLS client certificate issued by the temp CA,
# then GetAppKey over mutual TLS; and SignCert with a CertSigningRequestV2 (SCALE) signed by the
# CSR key. It recomputes the expected keys from the KMS's root key files with the spec's
# formulas (kms-ratls.md §3.2-3.5) so the server's derivations are checked independently.
#
# usage: kms_client.py CMD URL SIM_BIN TD_SOCKET VM_CONFIG [STATE_DIR]
#   CMD = getappkey | getappkey-noatt | getappkey-badquote | signcert
# Prints one JSON line (the reply, plus "check" results); exit 1 on an RPC error (message on
# stdout as {"error": ...}).
import hashlib, hmac, http.client, json, os, ssl, subprocess, sys, tempfile, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from Cryptodome.PublicKey import ECC

ATT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.62397.1.8")
APP_ID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.62397.1.3")


def compact(n):
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    b = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(b) - 4) << 2) | 3]) + b


def vec(b):
    return compact(len(b)) + b


def sstr(s):
    return vec(s.encode())


def der_octet(b):
    n = len(b)
    if n < 128:
        return b"\x04" + bytes([n]) + b
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(ln)]) + ln + b


def attestation(sim, sock, report_data, config, corrupt=False):
    quote = subprocess.run([sim, "tdx-quote", "--socket", sock, "--report-data",
                            report_data.hex()], check=True, capture_output=True).stdout
    if corrupt:
        quote = bytearray(quote)
        quote[700] ^= 1  # inside the quote signature data
        quote = bytes(quote)
    log = json.loads(subprocess.run([sim, "event-log", "--socket", sock], check=True,
                                    capture_output=True).stdout)
    out = b"\x00\x00" + vec(quote) + compact(len(log))
    runtime = []
    for e in log:
        out += e["imr"].to_bytes(4, "little") + e["event_type"].to_bytes(4, "little")
        out += vec(bytes.fromhex(e.get("digest") or "")) + sstr(e.get("event", ""))
        out += vec(bytes.fromhex(e.get("event_payload") or ""))
        if e["event_type"] == 0x08000001:
            runtime.append(e)
    out += compact(len(runtime))
    for e in runtime:
        out += sstr(e["event"]) + vec(bytes.fromhex(e.get("event_payload") or ""))
    return out + report_data + sstr(config)


def post(url, method, body, cert=None):
    host, port = url.split("//")[1].split(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
    c.request("POST", "/prpc/" + method + "?json", json.dumps(body),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        print(json.dumps({"error": data.get("error")}))
        sys.exit(1)
    return data


def hkdf(ikm, info, n=32):
    prk = hmac.new(b"RATLS", ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:n]


def p256_pub(d):
    k = ECC.construct(curve="P-256", d=int.from_bytes(d, "big"))
    return int(k.pointQ.x).to_bytes(32, "big") + int(k.pointQ.y).to_bytes(32, "big")


PKCS8_HEAD = bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420")


def dh_secret(root, info):
    d = hkdf(root, info)
    return hashlib.sha256(PKCS8_HEAD + d + bytes.fromhex("a144034200") + b"\x04" + p256_pub(d)).digest()


def main():
    cmd, url, sim, sock, vm_config = sys.argv[1:6]
    state = sys.argv[6] if len(sys.argv) > 6 else None
    tmp = post(url, "GetTempCaCert", {})
    ca_key = serialization.load_pem_private_key(tmp["temp_ca_key"].encode(), None)
    ca_cert = x509.load_pem_x509_certificate(tmp["temp_ca_cert"].encode())
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    rd = hashlib.sha512(b"ratls-cert:" + spki).digest()
    att = attestation(sim, sock, rd, vm_config, corrupt=(cmd == "getappkey-badquote"))
    result = {}
    if cmd == "signcert":
        csr = (sstr("please sign cert:") + vec(spki) + b"\x00" + sstr("app.example") +
               compact(1) + sstr("app.example") + b"\x01\x00\x01\x01" + b"\x00\x00" + att)
        sig = key.sign(csr, ec.ECDSA(hashes.SHA256()))
        reply = post(url, "SignCert", {"api_version": 2, "csr": csr.hex(), "signature": sig.hex(),
                                       "vm_config": vm_config})
        chain = reply["certificate_chain"]
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        app_ca = x509.load_pem_x509_certificate(chain[1].encode())
        root = x509.load_pem_x509_certificate(chain[2].encode())
        leaf_spki = leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
        result["leaf_key_is_csr_key"] = leaf_spki == spki
        root.public_key().verify(app_ca.signature, app_ca.tbs_certificate_bytes,
                                 ec.ECDSA(hashes.SHA256()))
        app_ca.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes,
                                   ec.ECDSA(hashes.SHA256()))
        result["chain_verifies"] = True
        ext = leaf.extensions.get_extension_for_oid(APP_ID_OID).value.value
        result["leaf_app_id"] = ext[2:].hex()  # inner OCTET STRING of 20 bytes
        result["leaf_has_attestation"] = any(e.oid == ATT_OID for e in leaf.extensions)
        result["app_ca_subject"] = app_ca.subject.rfc4514_string()
        result["leaf_subject"] = leaf.subject.rfc4514_string()
        if state:
            root_d = ECC.import_key(open(state + "/root-ca.key").read()).d
            root_b = int(root_d).to_bytes(32, "big")
            app_id = bytes.fromhex(result["leaf_app_id"])
            pub = app_ca.public_key().public_numbers()
            result["app_ca_key_derived"] = (pub.x.to_bytes(32, "big") + pub.y.to_bytes(32, "big")
                                            == p256_pub(hkdf(root_b, app_id + b"app-ca")))
        print(json.dumps(result))
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "RA-TLS TEMP Cert")]))
         .issuer_name(ca_cert.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(hours=1)))
    if cmd != "getappkey-noatt":
        b = b.add_extension(x509.UnrecognizedExtension(ATT_OID, der_octet(att)), critical=False)
    cert = b.sign(ca_key, hashes.SHA256())
    d = tempfile.mkdtemp()
    cf, kf = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
    open(cf, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(kf, "wb").write(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    reply = post(url, "GetAppKey", {"api_version": 1, "vm_config": vm_config}, (cf, kf))
    if state:
        root_d = ECC.import_key(open(state + "/root-ca.key").read()).d
        root_b = int(root_d).to_bytes(32, "big")
        k256_root = open(state + "/root-k256.key", "rb").read()
        app_id = bytes.fromhex(sys.argv[7])
        inst = bytes.fromhex(sys.argv[8])
        result["disk_ok"] = reply["disk_crypt_key"] == dh_secret(root_b, app_id + inst + b"app-disk-crypt-key").hex()
        result["env_ok"] = reply["env_crypt_key"] == dh_secret(root_b, app_id + b"env-encrypt-key").hex()
        result["k256_ok"] = reply["k256_key"] == hkdf(k256_root, app_id + b"app-key").hex()
    reply.update(result)
    print(json.dumps(reply))


main()
