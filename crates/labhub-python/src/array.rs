//! numpy arrays over shared memory: a view of a slot whose base object keeps the slot's owner
//! (a loan or a frame) alive and counts the views, so the owner knows when none is left.
#![allow(unsafe_code)]

use std::ffi::c_void;

use numpy::npyffi::{
    self, NPY_ARRAY_ALIGNED, NPY_ARRAY_C_CONTIGUOUS, NPY_ARRAY_WRITEABLE, NpyTypes, PY_ARRAY_API,
    npy_intp,
};
use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pyo3::prelude::*;

/// Holds a Python object and unpins it when dropped.
#[pyclass(module = "labhub", frozen, name = "_ViewBase")]
pub struct Pin {
    owner: Py<PyAny>,
    unpin: fn(&Bound<'_, PyAny>),
}

impl Drop for Pin {
    fn drop(&mut self) {
        let unpin = self.unpin;
        Python::attach(|py| unpin(self.owner.bind(py)));
    }
}

/// A C-contiguous array of `descr` elements and `shape` over `len` bytes at `data`, whose base
/// is a new [`Pin`] of `owner` (`unpin` is called with `owner` when the array and every view
/// derived from it are gone).
///
/// # Safety
/// `data` must point to `len` bytes (the product of `shape` times the element size) that stay
/// mapped while `owner` lives and, if `writable`, that nothing else writes while it lives.
pub unsafe fn view<'py>(
    py: Python<'py>,
    descr: &Bound<'py, PyArrayDescr>,
    shape: &[u64],
    data: *mut u8,
    writable: bool,
    owner: Bound<'py, PyAny>,
    unpin: fn(&Bound<'_, PyAny>),
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims: Vec<npy_intp> = shape.iter().map(|&d| d as npy_intp).collect();
    let flags =
        NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | if writable { NPY_ARRAY_WRITEABLE } else { 0 };
    let base = Bound::new(
        py,
        Pin {
            owner: owner.unbind(),
            unpin,
        },
    )?;
    // SAFETY: the array type object comes from numpy's C API table; `into_dtype_ptr` passes a
    // new reference to the descriptor, which `PyArray_NewFromDescr` steals; `dims` outlives the
    // call; null strides ask for C order; `data` is valid as the caller guarantees, and the
    // array does not own it (no NPY_ARRAY_OWNDATA).
    let array = unsafe {
        let subtype = npyffi::get_type_object(py, NpyTypes::PyArray_Type);
        PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            subtype,
            descr.clone().into_dtype_ptr(),
            dims.len() as _,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data.cast::<c_void>(),
            flags,
            std::ptr::null_mut(),
        )
    };
    if array.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `array` is a new, owned reference to an ndarray.
    let array = unsafe { Bound::from_owned_ptr(py, array) };
    // SAFETY: `array` is an ndarray without a base; `PyArray_SetBaseObject` steals the
    // reference `into_ptr` gives it, also when it fails.
    let failed = unsafe {
        PY_ARRAY_API.PyArray_SetBaseObject(py, array.as_ptr().cast(), base.into_any().into_ptr())
    } < 0;
    if failed {
        return Err(PyErr::fetch(py));
    }
    Ok(array)
}
