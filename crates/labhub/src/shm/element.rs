//! What a frame holds: the element types a channel can carry, the Rust types that read them in
//! place, and the marker of channels whose element type is chosen at run time.
#![deny(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// The element type of a channel's frames, stored in the segment header as a code.
///
/// Every element type has a fixed size and a numpy dtype string
/// ([`ElementType::numpy_dtype`]), so a reader in any language can rebuild an array from a frame's
/// bytes and shape. Multi-byte elements are little-endian; complex numbers are a real part
/// followed by an imaginary part; a `bool` is one byte, 0 false, anything else true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum ElementType {
    /// `u8`: one unsigned byte (byte channels).
    U8,
    /// `i8`.
    I8,
    /// `u16`.
    U16,
    /// `i16`.
    I16,
    /// `u32`.
    U32,
    /// `i32`.
    I32,
    /// `u64`.
    U64,
    /// `i64`.
    I64,
    /// `f32` (IEEE 754 binary32).
    F32,
    /// `f64` (IEEE 754 binary64).
    F64,
    /// `complex64`: two `f32`, real then imaginary.
    Complex64,
    /// `complex128`: two `f64`, real then imaginary.
    Complex128,
    /// `bool`: one byte.
    Bool,
}

/// Every element type, in code order.
pub(crate) const ALL: [ElementType; 13] = [
    ElementType::U8,
    ElementType::I8,
    ElementType::U16,
    ElementType::I16,
    ElementType::U32,
    ElementType::I32,
    ElementType::U64,
    ElementType::I64,
    ElementType::F32,
    ElementType::F64,
    ElementType::Complex64,
    ElementType::Complex128,
    ElementType::Bool,
];

impl ElementType {
    /// The code stored in the segment header (1 to 13; 0 is never a valid code).
    pub const fn code(self) -> u32 {
        match self {
            Self::U8 => 1,
            Self::I8 => 2,
            Self::U16 => 3,
            Self::I16 => 4,
            Self::U32 => 5,
            Self::I32 => 6,
            Self::U64 => 7,
            Self::I64 => 8,
            Self::F32 => 9,
            Self::F64 => 10,
            Self::Complex64 => 11,
            Self::Complex128 => 12,
            Self::Bool => 13,
        }
    }

    /// The element type of a header code, if it is one.
    pub fn from_code(code: u32) -> Option<Self> {
        ALL.into_iter().find(|t| t.code() == code)
    }

    /// Size of one element in bytes.
    pub const fn size(self) -> u64 {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::Complex64 => 8,
            Self::Complex128 => 16,
        }
    }

    /// The name used by the CLI, the broker and the docs (`u16`, `complex64`, …).
    pub const fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::Complex64 => "complex64",
            Self::Complex128 => "complex128",
            Self::Bool => "bool",
        }
    }

    /// The numpy dtype string of the element (`numpy.dtype(t.numpy_dtype())`): explicit
    /// little-endian, e.g. `<u2` for `u16`, `<c8` for `complex64`, `|b1` for `bool`.
    pub const fn numpy_dtype(self) -> &'static str {
        match self {
            Self::U8 => "|u1",
            Self::I8 => "|i1",
            Self::U16 => "<u2",
            Self::I16 => "<i2",
            Self::U32 => "<u4",
            Self::I32 => "<i4",
            Self::U64 => "<u8",
            Self::I64 => "<i8",
            Self::F32 => "<f4",
            Self::F64 => "<f8",
            Self::Complex64 => "<c8",
            Self::Complex128 => "<c16",
            Self::Bool => "|b1",
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string that names no element type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown element type {0:?} (u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, complex64, complex128, bool)"
)]
pub struct UnknownElementType(pub String);

impl FromStr for ElementType {
    type Err = UnknownElementType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownElementType(s.to_owned()))
    }
}

impl From<ElementType> for String {
    fn from(t: ElementType) -> String {
        t.name().to_owned()
    }
}

impl TryFrom<String> for ElementType {
    type Error = UnknownElementType;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A `bool` element as it lies in shared memory: one byte, 0 false, anything else true.
///
/// Not Rust's `bool`, for which any byte other than 0 or 1 is undefined behaviour: a frame's
/// bytes come from another process and are never trusted to be either.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(transparent)]
pub struct Bool(pub u8);

impl Bool {
    /// The truth value (any non-zero byte is true).
    pub const fn get(self) -> bool {
        self.0 != 0
    }
}

impl From<bool> for Bool {
    fn from(b: bool) -> Self {
        Self(u8::from(b))
    }
}

impl fmt::Debug for Bool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.get(), f)
    }
}

/// A `complex64` element (two `f32`).
pub type Complex32 = num_complex::Complex<f32>;
/// A `complex128` element (two `f64`).
pub type Complex64 = num_complex::Complex<f64>;

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that reads and writes one element type in place: `u8`, `i8`, `u16`, `i16`,
/// `u32`, `i32`, `u64`, `i64`, `f32`, `f64`, [`Complex32`], [`Complex64`] and [`Bool`].
///
/// Each is plain old data (`bytemuck::Pod`: every bit pattern is a value, no padding), so a
/// frame's bytes can be viewed as a slice of them without copying; the layout aligns every
/// payload to 64 bytes, more than any of them needs. Sealed: the set is the element types a
/// segment can name.
pub trait Element: bytemuck::Pod + sealed::Sealed + Send + Sync + fmt::Debug {
    /// The element type this Rust type reads.
    const TYPE: ElementType;
}

macro_rules! elements {
    ($($t:ty => $e:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const TYPE: ElementType = ElementType::$e;
        }
        impl Payload for $t {
            type Item = $t;
            const FIXED: Option<ElementType> = Some(ElementType::$e);
        }
    )*};
}

elements!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64,
    i64 => I64, f32 => F32, f64 => F64, Complex32 => Complex64, Complex64 => Complex128,
    Bool => Bool,
);

/// The marker of a runtime-typed channel end: its element type and shape come from the
/// segment (or are chosen at run time when creating), and frames are accessed as bytes. The
/// form the CLI, the recorder, bridges and language bindings use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dynamic;

impl sealed::Sealed for Dynamic {}

/// What a channel end's frames are accessed as: an [`Element`] type, or [`Dynamic`] (bytes).
/// Sealed.
pub trait Payload: sealed::Sealed + 'static {
    /// The item of a frame's slice: the element itself, or `u8` for [`Dynamic`].
    type Item: bytemuck::Pod + Send + Sync + fmt::Debug;
    /// The element type fixed by the Rust type, `None` for [`Dynamic`].
    const FIXED: Option<ElementType>;
}

impl Payload for Dynamic {
    type Item = u8;
    const FIXED: Option<ElementType> = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sizes_and_names_round_trip() {
        for (i, t) in ALL.into_iter().enumerate() {
            assert_eq!(t.code(), i as u32 + 1);
            assert_eq!(ElementType::from_code(t.code()), Some(t));
            assert_eq!(t.name().parse::<ElementType>(), Ok(t));
            assert_eq!(t.to_string(), t.name());
        }
        assert_eq!(ElementType::from_code(0), None);
        assert_eq!(ElementType::from_code(14), None);
        assert!("float".parse::<ElementType>().is_err());
    }

    #[test]
    fn rust_element_types_have_the_size_and_alignment_the_layout_assumes() {
        fn check<T: Element>() {
            assert_eq!(
                std::mem::size_of::<T>() as u64,
                T::TYPE.size(),
                "{}",
                T::TYPE
            );
            // Payloads are 64-aligned: every element type must need no more.
            assert!(std::mem::align_of::<T>() <= 64);
        }
        check::<u8>();
        check::<i8>();
        check::<u16>();
        check::<i16>();
        check::<u32>();
        check::<i32>();
        check::<u64>();
        check::<i64>();
        check::<f32>();
        check::<f64>();
        check::<Complex32>();
        check::<Complex64>();
        check::<Bool>();
    }

    #[test]
    fn numpy_dtypes_state_size_and_byte_order() {
        for t in ALL {
            let d = t.numpy_dtype();
            let size: u64 = d[2..].parse().unwrap();
            assert_eq!(size, t.size(), "{d}");
            assert!(d.starts_with(if t.size() == 1 { '|' } else { '<' }), "{d}");
        }
    }
}
