// SFTCore: tensors with autograd, the model zoo, LoRA/QLoRA, formats, tokenizers, chat
// templates, data, training and generation. Re-exports the kernel layer's public types.
@_exported import SFTKernels

/// The library version, printed by `sftctl --version`.
public let sftVersion = "0.1.0"
