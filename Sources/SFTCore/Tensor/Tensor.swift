// Tensor: an n-dimensional array in device memory with an optional autograd node.
//
// Tensors are contiguous and row-major; a reshape is a view that shares storage. Compute is f32
// (i32 for token ids, positions and document ids). A leaf with `requiresGrad` accumulates its
// gradient in `grad`, allocated on first use, so frozen weights never own a gradient buffer.
// Non-leaf tensors carry a `GradNode`: the inputs and the backward closure of the op that made
// them (see Autograd.swift).

import Foundation
import SFTKernels

/// An n-dimensional, contiguous, row-major array in one backend's memory, with an optional
/// autograd node (f32 for values, i32 for ids and positions, bf16/f16 for stored weights, u8
/// for packed 4-bit codes).
public final class Tensor: CustomStringConvertible {
    /// The dimensions, outermost first (e.g. (N, C) for N rows of width C).
    public let shape: [Int]
    /// The element type of the storage.
    public let dtype: DType
    let storage: BufferView
    /// The device backend that holds the storage and runs this tensor's ops.
    public let backend: Backend
    /// Leaves: whether to accumulate a gradient. Non-leaves: whether any input needed one.
    public var requiresGrad: Bool
    /// Accumulated gradient of a leaf (nil until the first backward pass reaches it).
    public var grad: Tensor?
    /// The op that produced this tensor, when it was recorded for backward.
    var node: GradNode?

    /// Number of elements: the product of `shape`.
    public var count: Int { shape.reduce(1, *) }
    /// The device the tensor lives on (its backend's).
    public var device: Device { backend.device }
    /// Whether the tensor was made directly (a parameter or an input) rather than recorded as the
    /// output of an op.
    public var isLeaf: Bool { node == nil }

    init(shape: [Int], dtype: DType = .f32, storage: BufferView, backend: Backend,
                requiresGrad: Bool = false) {
        self.shape = shape
        self.dtype = dtype
        self.storage = storage
        self.backend = backend
        self.requiresGrad = requiresGrad
    }

    /// A new uninitialized tensor.
    public convenience init(empty shape: [Int], dtype: DType = .f32, on backend: Backend) throws {
        let n = shape.reduce(1, *)
        let buffer = try backend.allocate(bytes: max(1, n) * dtype.size)
        self.init(shape: shape, dtype: dtype, storage: BufferView(buffer), backend: backend)
    }

    /// A new tensor of zeros.
    public static func zeros(_ shape: [Int], dtype: DType = .f32, on backend: Backend) throws -> Tensor {
        let t = try Tensor(empty: shape, dtype: dtype, on: backend)
        if dtype == .f32 { try backend.fill(t.storage, value: 0, count: t.count) } else {
            let z = [UInt8](repeating: 0, count: t.count * dtype.size)
            try z.withUnsafeBytes { try backend.upload($0.baseAddress!, to: t.storage, bytes: z.count) }
        }
        return t
    }

    /// A new f32 tensor with the given values.
    public convenience init(_ values: [Float], shape: [Int], on backend: Backend, requiresGrad: Bool = false) throws {
        guard values.count == shape.reduce(1, *) else {
            throw SFTError.shape(op: "Tensor", message: "\(values.count) values for shape \(shape)")
        }
        try self.init(empty: shape, dtype: .f32, on: backend)
        try values.withUnsafeBytes { try backend.upload($0.baseAddress!, to: storage, bytes: $0.count) }
        self.requiresGrad = requiresGrad
    }

    /// A new i32 tensor (token ids, positions, document ids).
    public convenience init(ints values: [Int32], shape: [Int], on backend: Backend) throws {
        guard values.count == shape.reduce(1, *) else {
            throw SFTError.shape(op: "Tensor", message: "\(values.count) values for shape \(shape)")
        }
        try self.init(empty: shape, dtype: .i32, on: backend)
        try values.withUnsafeBytes { try backend.upload($0.baseAddress!, to: storage, bytes: $0.count) }
    }

    /// Copies the values to the host as f32 (bf16 and f16 widened exactly).
    public func floats() throws -> [Float] {
        if dtype == .bf16 || dtype == .f16 {
            let wide = try Tensor(empty: shape, on: backend)
            try backend.cast(storage, from: dtype, into: wide.storage, to: .f32, count: count)
            return try wide.floats()
        }
        guard dtype == .f32 else { throw SFTError.shape(op: "floats", message: "tensor is \(dtype), not f32") }
        var out = [Float](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try backend.download(storage, to: $0.baseAddress!, bytes: $0.count) }
        return out
    }

    /// Copies the values to the host as i32.
    public func ints() throws -> [Int32] {
        guard dtype == .i32 else { throw SFTError.shape(op: "ints", message: "tensor is \(dtype), not i32") }
        var out = [Int32](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try backend.download(storage, to: $0.baseAddress!, bytes: $0.count) }
        return out
    }

    /// The single value of a one-element f32 tensor.
    public func item() throws -> Float {
        guard count == 1 else { throw SFTError.shape(op: "item", message: "tensor has shape \(shape)") }
        return try floats()[0]
    }

    /// A view with another shape over the same storage. Gradients flow through it.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.reduce(1, *) == count else {
            throw SFTError.shape(op: "reshape", message: "cannot view \(shape) as \(newShape)")
        }
        let v = Tensor(shape: newShape, dtype: dtype, storage: storage, backend: backend)
        if Autograd.isEnabled && requiresGrad {
            v.requiresGrad = true
            let oldShape = shape
            v.node = GradNode(op: "reshape", inputs: [GradEdge(self)]) { g in [try g.reshaped(oldShape)] }
        }
        return v
    }

    /// The same storage, cut from the graph.
    public func detached(requiresGrad: Bool = false) -> Tensor {
        Tensor(shape: shape, dtype: dtype, storage: storage, backend: backend, requiresGrad: requiresGrad)
    }

    /// A deep copy (new storage), cut from the graph.
    public func copy() throws -> Tensor {
        let t = try Tensor(empty: shape, dtype: dtype, on: backend)
        try backend.copy(storage, to: t.storage, bytes: count * dtype.size)
        return t
    }

    /// Overwrites the values from the host.
    public func assign(_ values: [Float]) throws {
        guard dtype == .f32, values.count == count else {
            throw SFTError.shape(op: "assign", message: "\(values.count) values into \(shape) \(dtype)")
        }
        try values.withUnsafeBytes { try backend.upload($0.baseAddress!, to: storage, bytes: $0.count) }
    }

    /// The leaf's gradient buffer, created as zeros on first use.
    public func gradBuffer() throws -> Tensor {
        if let g = grad { return g }
        let g = try Tensor.zeros(shape, on: backend)
        grad = g
        return g
    }

    /// Rows [start, start+n) along the first dimension, as a view (no gradient).
    public func rows(_ start: Int, _ n: Int) throws -> Tensor {
        guard let first = shape.first, start >= 0, n >= 0, start + n <= first else {
            throw SFTError.shape(op: "rows", message: "rows \(start)..<\(start + n) of \(shape)")
        }
        let rowElems = count / max(1, first)
        return Tensor(shape: [n] + shape.dropFirst(), dtype: dtype,
                      storage: storage.advanced(byBytes: start * rowElems * dtype.size), backend: backend)
    }

    /// "Tensor(shape, dtype, device)", without the values.
    public var description: String { "Tensor(\(shape), \(dtype), \(device))" }
}
