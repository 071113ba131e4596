// Quickstart: the smallest use of SFTCore from a Swift program.
import SFTCore
print("sft \(sftVersion)")
