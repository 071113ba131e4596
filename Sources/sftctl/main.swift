// sftctl: the command-line front of sft. Parses arguments, calls SFTCore, prints.
import SFTCore
print("sftctl \(sftVersion)")
