//! What a person typed about one ente (pure data), read by `onboard` from flags or a CSV
//! row, checked by `onboard::tenant`.

/// One ente as a person typed it, on the command line or in a CSV row. Nothing is checked
/// yet; `onboard::tenant` does that.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ente {
    pub name: String,
    pub display_name: String,
    /// An `EntityType` as the API spells it (case is not significant here).
    pub entity_type: String,
    pub istat_code: Option<String>,
    pub ipa_code: Option<String>,
    /// A `Tier` as the API spells it; the API's default (`small`) when unset.
    pub tier: Option<String>,
    pub admin_groups: Vec<String>,
    pub admin_users: Vec<String>,
}
