//! Every shipped recipe parses, names a known model and layer, and follows the naming rule
//! `<model>-<method><target>.toml`.

use std::path::Path;

use lopper_train::Recipe;

#[test]
fn shipped_recipes_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let name = path.file_stem().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(&format!("{}-", recipe.model.name())),
            "{name} must start with its model"
        );
        // Structured recipes name the fraction of channels they remove.
        let target = recipe
            .structured
            .as_ref()
            .map_or_else(|| recipe.pruning.schedule.final_target(), |s| s.target);
        if let Some(digits) = name
            .rsplit('-')
            .next()
            .map(|m| m.trim_start_matches(|c: char| c.is_ascii_alphabetic()))
        {
            if let Ok(pct) = digits.parse::<f64>() {
                assert!(
                    (pct / 100.0 - target).abs() < 1e-9,
                    "{name}: file name says {pct} %, schedule ends at {target}"
                );
            }
        }
        n += 1;
    }
    assert!(n >= 5, "expected the shipped recipes, found {n}");
}
