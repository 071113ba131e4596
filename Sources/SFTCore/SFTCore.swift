// SFTCore: tensors with autograd, the model zoo, LoRA/QLoRA, formats, tokenizers, chat
// templates, data, training and generation. Re-exports the few kernel-layer names a user of
// SFTCore writes (a device, a backend, a collective, an element type); the rest of SFTKernels
// (buffers, kernels, backends' internals) needs `import SFTKernels`.
import SFTKernels
@_exported import enum SFTKernels.Device
@_exported import enum SFTKernels.DType
@_exported import enum SFTKernels.QuantType
@_exported import enum SFTKernels.KernelError
@_exported import protocol SFTKernels.Backend
@_exported import protocol SFTKernels.Collective
@_exported import func SFTKernels.backend

/// The library version, printed by `sftctl --version`.
public let sftVersion = "0.1.0"
