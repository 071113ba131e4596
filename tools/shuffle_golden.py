#!/usr/bin/env python3
"""Golden values for sft's data shuffling (Sources/SFTCore/Data/Shuffle.swift), computed by an
independent Python implementation: SplitMix64 outputs, Lemire's bounded draw, the Fisher-Yates
permutation and the epoch seed. BatchingTests.testShuffleGolden compares against these.
Usage: python3 tools/shuffle_golden.py"""
M = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    def below(self, bound):
        threshold = ((1 << 64) - bound) % bound
        while True:
            x = self.next() * bound
            if x & M >= threshold:
                return x >> 64


def permutation(count, seed):
    p, g = list(range(count)), SplitMix64(seed)
    for i in range(count - 1, 0, -1):
        j = g.below(i + 1)
        p[i], p[j] = p[j], p[i]
    return p


def epoch_seed(seed, epoch):
    return SplitMix64(seed ^ ((epoch * 0xD1B54A32D192ED03) & M)).next()


g = SplitMix64(0)
print("splitmix64(0):", [hex(g.next()) for _ in range(3)])
print("permutation(10, 42):", permutation(10, 42))
print("epochSeed(42, 3):", epoch_seed(42, 3))
print("permutation(12, epochSeed(7, 1)):", permutation(12, epoch_seed(7, 1)))
