//! Two things libvosk offers that the `vosk` crate (0.3.1) does not expose:
//! - **libvosk's own result JSON**, byte for byte. The crate parses it into structs, whose
//!   re-serialization differs from what vosk-server sends (compact, keys reordered, empty
//!   `result: []` and `partial_result: []` added, alternatives' confidences through `f32`);
//!   `asr_bridge serve` sends these strings as vosk-server does (`rec.Result()`).
//! - **A word lookup on a shared model**: `vosk_model_find_word` only reads the model's symbol
//!   table (`Model::FindWord` in libvosk's `model.cc`), but the crate takes `&mut Model`, which
//!   made the server hold a lock shared by every call while it checked a phrase list.
//!
//! Both read the handle inside the crate's wrapper: `vosk::Model` and `vosk::Recognizer` are
//! one-field tuple structs over `NonNull<VoskModel>` / `NonNull<VoskRecognizer>`
//! (`models/sequential.rs:11`, `recognition/sequential.rs:11` of vosk 0.3.1, pinned with `=`
//! in Cargo.toml); the sizes are asserted below at compile time.

#![allow(unsafe_code)] // the FFI module: each block says why it is sound

use std::ffi::{c_char, CStr, CString};
use std::mem::size_of;
use std::ptr::NonNull;

use vosk::{Model, Recognizer};
use vosk_sys::{VoskModel, VoskRecognizer};

const _: () = assert!(size_of::<Model>() == size_of::<NonNull<VoskModel>>());
const _: () = assert!(size_of::<Recognizer>() == size_of::<NonNull<VoskRecognizer>>());

fn model_handle(m: &Model) -> *mut VoskModel {
    // SAFETY: vosk 0.3.1's `Model` is `struct Model(NonNull<VoskModel>)` (one field, so at
    // offset 0; same size, asserted above): reading it as that `NonNull` copies the handle.
    unsafe { *(m as *const Model).cast::<NonNull<VoskModel>>() }.as_ptr()
}

fn recognizer_handle(r: &mut Recognizer) -> *mut VoskRecognizer {
    // SAFETY: as `model_handle`, for `struct Recognizer(NonNull<VoskRecognizer>)`.
    unsafe { *(r as *mut Recognizer).cast::<NonNull<VoskRecognizer>>() }.as_ptr()
}

/// Whether the model's vocabulary holds `word`. Takes `&Model`: libvosk's lookup only reads.
pub(crate) fn knows(model: &Model, word: &str) -> bool {
    let Ok(w) = CString::new(word) else { return false };
    // SAFETY: the handle is live for as long as `model` is borrowed; `w` is a valid C string;
    // vosk_model_find_word reads the model's symbol table and nothing else (libvosk's
    // Model::FindWord), so concurrent lookups and recognizer builds on the model are sound.
    unsafe { vosk_sys::vosk_model_find_word(model_handle(model), w.as_ptr()) >= 0 }
}

/// Which result to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// The segment libvosk's endpoint just closed (`vosk_recognizer_result`).
    Closed,
    /// Everything left, ending the utterance (`vosk_recognizer_final_result`).
    Final,
    /// The utterance so far (`vosk_recognizer_partial_result`).
    Partial,
}

/// libvosk's JSON for `take`, exactly as libvosk wrote it.
pub(crate) fn json(rec: &mut Recognizer, take: Take) -> String {
    let h = recognizer_handle(rec);
    // SAFETY: `rec` is borrowed mutably, so nothing else uses the recognizer; libvosk returns
    // a NUL-terminated string it owns until the next call on this recognizer, copied here
    // before anything else touches it.
    unsafe {
        let p: *const c_char = match take {
            Take::Closed => vosk_sys::vosk_recognizer_result(h),
            Take::Final => vosk_sys::vosk_recognizer_final_result(h),
            Take::Partial => vosk_sys::vosk_recognizer_partial_result(h),
        };
        if p.is_null() {
            return String::new();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}
