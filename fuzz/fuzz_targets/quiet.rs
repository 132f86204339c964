//! Shared by the targets that parse `tokenizer.json`.

use lopper_model::bert::runtime::TOKENIZERS_PANIC;

/// libFuzzer's panic hook aborts on every panic, caught or not. Panics inside the tokenizers
/// crate are caught by `parse_tokenizer` and become errors (as the lopper binary reports them),
/// so they pass; every other panic still aborts and is a finding.
pub fn quiet_caught_panics() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .location()
            .is_some_and(|l| l.file().contains(TOKENIZERS_PANIC))
        {
            hook(info);
        }
    }));
}
