//! Raw bindings to `csrc/shim.cpp` and the one place where this crate's `unsafe` lives.
//!
//! Contract (see the C++ file header): fallible calls return NULL or a malloc'd message freed with
//! `medmae_c10d_free_error`; tensors are passed as `at::Tensor*`, which is what tch's `Tensor::as_ptr()`
//! yields (torch-sys names `at::Tensor` `C_tensor`). The C++ side only reads the handle and writes tensor
//! *data* in place, so a `&Tensor` is enough on the Rust side (as for tch's own in-place ops).

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;

use tch::Tensor;

/// Opaque C++ `Group` (store + backend).
#[repr(C)]
pub(crate) struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    fn medmae_c10d_free_error(err: *mut c_char);
    fn medmae_c10d_group_create(
        backend: *const c_char,
        master_addr: *const c_char,
        master_port: u16,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn medmae_c10d_group_destroy(group: *mut RawGroup);
    fn medmae_c10d_group_rank(group: *const RawGroup) -> c_int;
    fn medmae_c10d_group_size(group: *const RawGroup) -> c_int;
    fn medmae_c10d_broadcast(
        group: *mut RawGroup,
        tensors: *const *mut c_void,
        n: usize,
        root: c_int,
        bucket_bytes: i64,
    ) -> *mut c_char;
    fn medmae_c10d_allreduce(
        group: *mut RawGroup,
        tensors: *const *mut c_void,
        n: usize,
        average: c_int,
        bucket_bytes: i64,
    ) -> *mut c_char;
    fn medmae_c10d_barrier(group: *mut RawGroup) -> *mut c_char;
}

/// Converts a shim return value into `Err(message)`.
fn check(err: *mut c_char) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string malloc'd by the shim, released exactly once here.
    let message = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { medmae_c10d_free_error(err) };
    Err(message)
}

fn tensor_ptrs(tensors: &[Tensor]) -> Vec<*mut c_void> {
    tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// Owning handle of a C++ group; destroyed on drop.
pub(crate) struct Group(NonNull<RawGroup>);

// SAFETY: the C++ group (TCPStore client + c10d backend) has no thread affinity; `Group` is not `Sync`, so
// collectives are never issued concurrently from two threads, which c10d requires.
unsafe impl Send for Group {}

impl Group {
    /// Rendezvous through the TCPStore at `addr:port` and create the backend (`gloo` or `nccl`).
    pub(crate) fn create(
        backend: &str,
        addr: &str,
        port: u16,
        rank: i32,
        world_size: i32,
        timeout_ms: i64,
    ) -> Result<Self, String> {
        let backend =
            CString::new(backend).map_err(|_| "backend name contains a NUL byte".to_owned())?;
        let addr =
            CString::new(addr).map_err(|_| "master address contains a NUL byte".to_owned())?;
        let mut out: *mut RawGroup = std::ptr::null_mut();
        // SAFETY: valid C strings for the call's duration; `out` is a valid out-pointer.
        check(unsafe {
            medmae_c10d_group_create(
                backend.as_ptr(),
                addr.as_ptr(),
                port,
                rank,
                world_size,
                timeout_ms,
                &mut out,
            )
        })?;
        NonNull::new(out)
            .map(Group)
            .ok_or_else(|| "shim returned no group and no error".to_owned())
    }

    /// This process's rank as c10d sees it.
    pub(crate) fn rank(&self) -> usize {
        // SAFETY: the group pointer is live until drop.
        usize::try_from(unsafe { medmae_c10d_group_rank(self.0.as_ptr()) }).unwrap_or(0)
    }

    /// World size as c10d sees it.
    pub(crate) fn size(&self) -> usize {
        // SAFETY: the group pointer is live until drop.
        usize::try_from(unsafe { medmae_c10d_group_size(self.0.as_ptr()) }).unwrap_or(1)
    }

    /// Broadcast from `root` into every tensor, bucketed by `bucket_bytes`.
    pub(crate) fn broadcast(
        &self,
        tensors: &[Tensor],
        root: i32,
        bucket_bytes: i64,
    ) -> Result<(), String> {
        let ptrs = tensor_ptrs(tensors);
        // SAFETY: `ptrs` holds live `at::Tensor*` borrowed from `tensors` for the duration of the call.
        check(unsafe {
            medmae_c10d_broadcast(
                self.0.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                root,
                bucket_bytes,
            )
        })
    }

    /// Sum (or average) every tensor across ranks in place, bucketed by `bucket_bytes`.
    pub(crate) fn allreduce(
        &self,
        tensors: &[Tensor],
        average: bool,
        bucket_bytes: i64,
    ) -> Result<(), String> {
        let ptrs = tensor_ptrs(tensors);
        // SAFETY: as in `broadcast`.
        check(unsafe {
            medmae_c10d_allreduce(
                self.0.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                c_int::from(average),
                bucket_bytes,
            )
        })
    }

    /// Block until every rank arrives.
    pub(crate) fn barrier(&self) -> Result<(), String> {
        // SAFETY: the group pointer is live until drop.
        check(unsafe { medmae_c10d_barrier(self.0.as_ptr()) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by `medmae_c10d_group_create`, destroyed once.
        unsafe { medmae_c10d_group_destroy(self.0.as_ptr()) }
    }
}
