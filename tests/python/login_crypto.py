"""DistKV 0.63.3's password-login cryptography, for comparison with ours.

Usage: login_crypto.py LENGTH PRIVATE_A PRIVATE_B SEALED PASSWORD (hex for
keys and the box). With DistKV's own classes (moat.lib.diffiehellman, as
distkv.client.dh_secret uses it, and PyNaCl's SecretBox) it derives both
public keys and A's session key from the given private keys, opens SEALED
(which must hold SHA-256(PASSWORD)), and prints three lines in hex: both
public keys and a box of its own sealing that digest.
"""

import sys
from hashlib import sha256

import nacl.secret
from moat.lib.diffiehellman import DiffieHellman
from moat.util import byte2num, num2byte


def pair(length, private_hex):
    k = DiffieHellman(key_length=length, group=(5 if length < 32 else 14))
    k._DiffieHellman__private_key = int(private_hex, 16)
    k.generate_public_key()
    return k


def main():
    length, a_hex, b_hex, sealed_hex, password = sys.argv[1:]
    length = int(length)
    a, b = pair(length, a_hex), pair(length, b_hex)
    a.generate_shared_secret(byte2num(num2byte(b.public_key)))
    box = nacl.secret.SecretBox(num2byte(a.shared_secret)[0:32])
    digest = sha256(password.encode("utf-8")).digest()
    if box.decrypt(bytes.fromhex(sealed_hex)) != digest:
        sys.exit("our box does not hold the password's digest")
    print(num2byte(a.public_key).hex())
    print(num2byte(b.public_key).hex())
    print(bytes(box.encrypt(digest)).hex())


main()
