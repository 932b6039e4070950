"""Does an account's hash type show in the time a wrong password takes? Side by side, in-process.

Interleaved wrong-password checks with tokenward's production PasswordHasher against: no
account (the dummy argon2id verification), an argon2id account, and an imported bcrypt-10
account (padded to the floor). Prints each median and its ratio to the unknown-email median.

    .venv/bin/python bench/enumeration.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import bcrypt

from tokenward.core.passwords import PasswordHasher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    hasher = PasswordHasher()
    kinds = {
        "unknown email": None,
        "argon2id account": hasher.hash("the right password"),
        "imported bcrypt-10 account": bcrypt.hashpw(
            b"the right password", bcrypt.gensalt(10)
        ).decode(),
    }
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, password_hash in kinds.items():
            started = time.perf_counter()
            hasher.verify("a wrong password", password_hash)
            times[name].append(time.perf_counter() - started)
    base = statistics.median(times["unknown email"])
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:28} median {median * 1000:7.1f} ms   ratio {median / base:5.2f}")


if __name__ == "__main__":
    main()
