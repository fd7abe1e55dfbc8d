use kube::CustomResourceExt;
use serde_json::Value;

use super::out_dir::{self, Action};
use super::table::RowError;
use super::*;

fn pistoia() -> Ente {
    Ente {
        name: "pistoia".into(),
        display_name: "Comune di Pistoia".into(),
        entity_type: "Comune".into(),
        istat_code: Some("047014".into()),
        ipa_code: Some("c_g713".into()),
        tier: Some("medium".into()),
        admin_groups: vec!["pistoia-mobilita".into(), "pistoia-admins".into()],
        admin_users: vec![],
    }
}

fn refusals(ente: &Ente) -> Vec<Invalid> {
    tenant(ente).expect_err("the ente should be refused")
}

const PISTOIA_YAML: &str = "\
apiVersion: smartregion.toscana.it/v1alpha1
kind: SmartRegionTenant
metadata:
  name: pistoia
spec:
  displayName: Comune di Pistoia
  entity:
    type: Comune
    istatCode: '047014'
    ipaCode: c_g713
  tier: medium
  admins:
    groups:
    - pistoia-admins
    - pistoia-mobilita
  deletionPolicy: Retain
  suspended: false
";

#[test]
fn an_ente_becomes_the_manifest_a_person_would_write() {
    let yaml = manifest(&tenant(&pistoia()).unwrap());
    assert_eq!(yaml, PISTOIA_YAML);
    // It reads back as the same tenant, with the ISTAT code still a string.
    let read: SmartRegionTenant = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(read.spec, tenant(&pistoia()).unwrap().spec);
    assert_eq!(read.spec.entity.istat_code.as_deref(), Some("047014"));
}

#[test]
fn flags_become_an_ente() {
    use crate::cli::{Cli, Command};
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "smartregion-operator",
        "onboard",
        "--name=pistoia",
        "--display-name=Comune di Pistoia",
        "--entity-type=comune",
        "--istat-code=047014",
        "--ipa-code=c_g713",
        "--tier=Medium",
        "--admin-group=pistoia-mobilita",
        "--admin-group=pistoia-admins",
    ])
    .unwrap();
    let Some(Command::Onboard(args)) = cli.command else {
        panic!("not the onboard subcommand");
    };
    assert_eq!(ente_from_flags(&args), pistoia());
    assert_eq!(
        manifest(&tenant(&ente_from_flags(&args)).unwrap()),
        PISTOIA_YAML
    );
}

#[test]
fn the_flags_of_one_ente_and_of_a_csv_do_not_mix() {
    use crate::cli::Cli;
    use clap::Parser;
    let parse = |args: &[&str]| {
        Cli::try_parse_from(["smartregion-operator", "onboard"].iter().chain(args))
            .map(|_| ())
            .map_err(|error| error.kind())
    };
    use clap::error::ErrorKind::*;
    assert_eq!(parse(&["--csv=enti.csv", "--out-dir=tenants"]), Ok(()));
    assert_eq!(
        parse(&["--csv=enti.csv"]),
        Err(MissingRequiredArgument),
        "--csv needs --out-dir"
    );
    assert_eq!(
        parse(&["--csv=enti.csv", "--out-dir=t", "--name=pistoia"]),
        Err(ArgumentConflict)
    );
    assert_eq!(
        parse(&["--name=pistoia", "--display-name=Comune di Pistoia"]),
        Err(MissingRequiredArgument),
        "one ente needs its entity type"
    );
    assert_eq!(
        parse(&["--name=p", "--display-name=P", "--entity-type=Frazione"]),
        Err(InvalidValue)
    );
}

#[test]
fn the_tier_defaults_to_the_apis_default_and_optional_codes_may_be_left_out() {
    let ente = Ente {
        istat_code: Some("  ".into()),
        ipa_code: None,
        tier: None,
        admin_groups: vec![],
        ..pistoia()
    };
    let tenant = tenant(&ente).unwrap();
    assert_eq!(tenant.spec.tier, Tier::Small);
    assert_eq!(tenant.spec.entity.istat_code, None);
    assert_eq!(tenant.spec.admins, None);
    let yaml = manifest(&tenant);
    assert!(
        !yaml.contains("istatCode") && !yaml.contains("admins"),
        "{yaml}"
    );
}

#[test]
fn every_problem_of_an_ente_is_reported_at_once() {
    let ente = Ente {
        name: "Pistoia".into(),
        display_name: " ".into(),
        entity_type: "Frazione".into(),
        istat_code: Some("47014".into()),
        ipa_code: Some("c-g713".into()),
        tier: Some("huge".into()),
        ..pistoia()
    };
    assert_eq!(
        refusals(&ente),
        vec![
            Invalid::Name("Pistoia".into()),
            Invalid::DisplayNameEmpty,
            Invalid::EntityType("Frazione".into()),
            Invalid::Tier("huge".into()),
            Invalid::IstatCode("47014".into()),
            Invalid::IpaCode("c-g713".into()),
        ]
    );
}

#[test]
fn refusals_say_what_to_write_instead() {
    let message = |ente: Ente| refusals(&ente)[0].to_string();
    assert!(
        message(Ente {
            istat_code: Some("47014".into()),
            ..pistoia()
        })
        .contains("leading zeros, e.g. \"047014\"")
    );
    let entity_type = message(Ente {
        entity_type: "Frazione".into(),
        ..pistoia()
    });
    assert!(
        entity_type.contains(
            "Comune, UnioneDiComuni, Provincia, CittaMetropolitana, Regione, \
             DirezioneRegionale, Partecipata, Altro"
        ),
        "{entity_type}"
    );
    let tier = message(Ente {
        tier: Some("xl".into()),
        ..pistoia()
    });
    assert!(
        tier.ends_with("is not one of small, medium, large"),
        "{tier}"
    );
    let name = message(Ente {
        name: "prato_centro".into(),
        ..pistoia()
    });
    assert!(name.contains("at most 40 characters"), "{name}");
}

#[test]
fn names_follow_the_apis_rule() {
    let with_name = |name: &str| Ente {
        name: name.into(),
        ..pistoia()
    };
    let longest = format!("p{}", "a".repeat(MAX_NAME_LEN - 1));
    for good in ["p", "unione-valdera", "rt-2", longest.as_str()] {
        assert!(
            tenant(&with_name(good)).is_ok(),
            "{good:?} must be accepted"
        );
    }
    let too_long = format!("{longest}a");
    for bad in [
        "1pistoia",
        "Pistoia",
        "prato_centro",
        "pistoia-",
        "-pistoia",
        "comune di pistoia",
        "pistoià",
        too_long.as_str(),
    ] {
        assert_eq!(
            refusals(&with_name(bad)),
            vec![Invalid::Name(bad.into())],
            "{bad:?}"
        );
    }
    assert_eq!(refusals(&with_name("")), vec![Invalid::NameEmpty]);
}

#[test]
fn codes_follow_the_schemas_patterns() {
    let with_codes = |istat: &str, ipa: &str| Ente {
        istat_code: Some(istat.into()),
        ipa_code: Some(ipa.into()),
        ..pistoia()
    };
    assert!(tenant(&with_codes("000001", "ab")).is_ok());
    assert!(tenant(&with_codes("100005", "C_G999_abcdefghijklm")).is_ok());
    for (istat, ipa) in [
        ("4701", "c"),
        ("0470140", "c_g713_abcdefghijklmn"),
        ("04701a", "c.g713"),
        ("047 014", "c g713"),
    ] {
        assert_eq!(
            refusals(&with_codes(istat, ipa)),
            vec![
                Invalid::IstatCode(istat.into()),
                Invalid::IpaCode(ipa.into())
            ]
        );
    }
}

/// The checks above use the constants the schema is generated from; this proves they are
/// really the ones in the CRD the API server gets.
#[test]
fn the_checked_limits_are_the_crds() {
    let crd = serde_json::to_value(SmartRegionTenant::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(
        spec["entity"]["properties"]["istatCode"]["pattern"],
        ISTAT_CODE_PATTERN
    );
    assert_eq!(
        spec["entity"]["properties"]["ipaCode"]["pattern"],
        IPA_CODE_PATTERN
    );
    assert_eq!(spec["displayName"]["maxLength"], DISPLAY_NAME_MAX_LEN);
    assert_eq!(spec["displayName"]["minLength"], 1);
    for list in ["groups", "users"] {
        let admins = &spec["admins"]["properties"][list];
        assert_eq!(admins["maxItems"], MAX_ADMINS);
        assert_eq!(admins["items"]["maxLength"], ADMIN_NAME_MAX_LEN);
        assert_eq!(admins["items"]["minLength"], 1);
    }
    let enum_values =
        |schema: &Value| -> Vec<String> { serde_json::from_value(schema["enum"].clone()).unwrap() };
    assert_eq!(
        enum_values(&spec["entity"]["properties"]["type"]).join(", "),
        variants::<EntityType>()
    );
    assert_eq!(enum_values(&spec["tier"]).join(", "), variants::<Tier>());
}

#[test]
fn entity_types_and_tiers_are_spelled_as_in_the_api() {
    for kind in EntityType::value_variants() {
        assert_eq!(serde_json::to_value(kind).unwrap(), api_name(kind));
    }
    for tier in Tier::value_variants() {
        assert_eq!(serde_json::to_value(tier).unwrap(), api_name(tier));
    }
}

#[test]
fn the_display_name_is_counted_in_characters_like_the_api_server_does() {
    let with_display_name = |display_name: String| Ente {
        display_name,
        ..pistoia()
    };
    assert!(tenant(&with_display_name("à".repeat(DISPLAY_NAME_MAX_LEN))).is_ok());
    assert_eq!(
        refusals(&with_display_name("à".repeat(DISPLAY_NAME_MAX_LEN + 1))),
        vec![Invalid::DisplayNameTooLong(DISPLAY_NAME_MAX_LEN + 1)]
    );
}

#[test]
fn admins_are_trimmed_sorted_and_deduplicated_and_limited() {
    let ente = Ente {
        admin_groups: vec![" b ".into(), "a".into(), "".into(), "b".into()],
        admin_users: vec!["mario.rossi@comune.pistoia.it".into()],
        ..pistoia()
    };
    let admins = tenant(&ente).unwrap().spec.admins.unwrap();
    assert_eq!(admins.groups, ["a", "b"]);
    assert_eq!(admins.users, ["mario.rossi@comune.pistoia.it"]);

    let many = Ente {
        admin_users: (0..=MAX_ADMINS).map(|i| format!("user-{i}")).collect(),
        admin_groups: vec!["g".repeat(ADMIN_NAME_MAX_LEN + 1)],
        ..pistoia()
    };
    assert_eq!(
        refusals(&many),
        vec![
            Invalid::AdminTooLong {
                kind: "group",
                value: "g".repeat(ADMIN_NAME_MAX_LEN + 1)
            },
            Invalid::TooManyAdmins {
                kind: "user",
                count: MAX_ADMINS + 1
            },
        ]
    );
}

const HEADER: &str = "name,displayName,entityType,istatCode,ipaCode,tier,adminGroups,adminUsers\n";

fn from_csv(text: &str) -> Result<Vec<(u64, SmartRegionTenant)>, CsvError> {
    tenants_from_csv(text.as_bytes())
}

fn bad_rows(text: &str) -> Vec<(u64, RowProblem)> {
    match from_csv(text) {
        Err(CsvError::BadRows(rows)) => rows
            .into_iter()
            .map(|bad| (bad.line, bad.problem))
            .collect(),
        other => panic!("expected bad rows, got {other:?}"),
    }
}

#[test]
fn csv_rows_become_tenants_with_their_lines() {
    let text = format!(
        "\u{feff}{HEADER}\
         pistoia,Comune di Pistoia,Comune,047014,c_g713,medium,pistoia-mobilita;pistoia-admins,\n\
         \n\
         unione-garfagnana ,\"Unione dei Comuni Garfagnana, Castelnuovo\",UnioneDiComuni,,,,ug-admins ; ,a@b.it;c@d.it\n\
         ,,,,,,,\n"
    );
    let tenants = from_csv(&text).unwrap();
    assert_eq!(tenants.len(), 2, "{tenants:?}");
    assert_eq!(tenants[0].0, 2);
    assert_eq!(manifest(&tenants[0].1), PISTOIA_YAML);
    let (line, garfagnana) = &tenants[1];
    assert_eq!(*line, 4, "the blank line 3 still counts");
    assert_eq!(
        garfagnana.spec.display_name,
        "Unione dei Comuni Garfagnana, Castelnuovo"
    );
    assert_eq!(garfagnana.spec.entity.kind, EntityType::UnioneDiComuni);
    assert_eq!(garfagnana.spec.tier, Tier::Small);
    let admins = garfagnana.spec.admins.as_ref().unwrap();
    assert_eq!(admins.groups, ["ug-admins"]);
    assert_eq!(admins.users, ["a@b.it", "c@d.it"]);
}

#[test]
fn optional_columns_may_be_left_out_and_columns_come_in_any_order() {
    let tenants = from_csv(
        "entityType,displayName,name\n\
         Provincia,Provincia di Siena,provincia-siena\n",
    )
    .unwrap();
    assert_eq!(tenants[0].1.spec.entity.kind, EntityType::Provincia);
    assert_eq!(
        tenants[0].1.metadata.name.as_deref(),
        Some("provincia-siena")
    );
}

#[test]
fn every_bad_row_is_reported_with_its_line_number() {
    let text = format!(
        "{HEADER}\
         pistoia,Comune di Pistoia,Comune,47014,,medium,,\n\
         livorno,Comune di Livorno,Comune,049009,,large,,\n\
         Siena,Provincia di Siena,Province,,,,,\n\
         grosseto,Comune di Grosseto,Comune\n\
         \"arezzo\",\"Comune di Arezzo\nin Toscana\",Comune,051002,,xl,,\n\
         lucca,,Comune,046017,,,,\n"
    );
    let rows = bad_rows(&text);
    assert_eq!(
        rows,
        vec![
            (2, Invalid::IstatCode("47014".into()).into()),
            (4, Invalid::Name("Siena".into()).into()),
            (4, Invalid::EntityType("Province".into()).into()),
            (
                5,
                RowError::CellCount {
                    found: 3,
                    expected: 8
                }
                .into()
            ),
            // A quoted value over two lines: the row starts on line 6, the next on 8.
            (6, Invalid::Tier("xl".into()).into()),
            (8, Invalid::DisplayNameEmpty.into()),
        ]
    );
    let message = from_csv(&text).unwrap_err().to_string();
    assert!(
        message.starts_with("5 rows are refused, nothing was written:\n  line 2: istatCode"),
        "{message}"
    );
    assert!(
        message.contains("\n  line 8: displayName is empty"),
        "{message}"
    );
}

#[test]
fn line_numbers_count_blank_lines_and_windows_line_ends() {
    let text = format!(
        "{}\r\n\r\n\
         pistoia,Comune di Pistoia,Comune,4701,,,,\r\n\
         \r\n\
         \r\n\
         livorno,Comune di Livorno,Comune,4900,,,,\r\n\
         \n\
         siena,Comune di Siena,Comune,5203,,,,",
        HEADER.trim_end()
    );
    let lines: Vec<u64> = bad_rows(&text).into_iter().map(|(line, _)| line).collect();
    assert_eq!(lines, [3, 6, 8]);
}

#[test]
fn duplicate_names_are_refused_with_the_first_line() {
    let text = format!(
        "{HEADER}\
         pistoia,Comune di Pistoia,Comune,,,,,\n\
         livorno,Comune di Livorno,Comune,,,,,\n\
         pistoia,Comune di Pistoia (copia),Comune,,,,,\n\
         livorno,Comune di Livorno,Comune,,,,,\n"
    );
    assert_eq!(
        bad_rows(&text),
        vec![
            (
                4,
                RowProblem::Duplicate {
                    name: "pistoia".into(),
                    first_line: 2
                }
            ),
            (
                5,
                RowProblem::Duplicate {
                    name: "livorno".into(),
                    first_line: 3
                }
            ),
        ]
    );
}

#[test]
fn a_wrong_header_row_is_refused_before_any_row() {
    let message = |text: &str| from_csv(text).unwrap_err().to_string();
    assert!(message("name,displayName,type\np,P,Comune\n").contains("unknown column \"type\""));
    assert!(message("name,displayName\np,P\n").contains("no column \"entityType\""));
    assert!(message("name,name,displayName,entityType\n").contains("\"name\" twice"));
    assert!(
        message("name;displayName;entityType\np;P;Comune\n")
            .contains("seems to use ';' between columns")
    );
    assert!(matches!(from_csv(HEADER), Err(CsvError::Empty)));
    assert!(matches!(from_csv(""), Err(CsvError::Table(_))));
}

#[test]
fn the_same_enti_give_the_same_bytes() {
    let text = format!(
        "{HEADER}\
         pistoia,Comune di Pistoia,Comune,047014,c_g713,medium,pistoia-admins;pistoia-mobilita,\n"
    );
    // Other column order, other case, other admin order, extra spaces: same ente.
    let reordered = "adminGroups,tier,entityType,displayName,name,istatCode,ipaCode\n\
         pistoia-mobilita ; pistoia-admins,MEDIUM,comune,Comune di Pistoia,pistoia,047014,c_g713\n";
    let manifests = |text: &str| -> Vec<String> {
        from_csv(text)
            .unwrap()
            .iter()
            .map(|(_, tenant)| manifest(tenant))
            .collect()
    };
    assert_eq!(manifests(&text), [PISTOIA_YAML]);
    assert_eq!(manifests(&text), manifests(&text));
    assert_eq!(manifests(reordered), manifests(&text));
}

#[test]
fn the_example_csv_holds_three_valid_enti() {
    let path = crate::test_support::crate_dir().join("../examples/enti.csv");
    let tenants = tenants_from_csv(&std::fs::read(path).unwrap()).unwrap();
    let names: Vec<_> = tenants
        .iter()
        .map(|(_, tenant)| tenant.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["pistoia", "livorno", "provincia-siena"]);
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

fn manifests(names: &[(&str, &str)]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|(name, content)| (format!("{name}.yaml"), content.to_string()))
        .collect()
}

#[test]
fn manifests_are_written_into_a_new_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tenants/enti");
    let plan = out_dir::plan(&dir, manifests(&[("a", "A\n"), ("b", "B\n")]), false).unwrap();
    let summary = out_dir::write(&plan).unwrap();
    assert_eq!(
        summary.to_string(),
        "2 created, 0 replaced, 0 unchanged",
        "{summary:?}"
    );
    assert_eq!(
        files(&dir),
        BTreeMap::from([
            ("a.yaml".into(), "A\n".into()),
            ("b.yaml".into(), "B\n".into())
        ]),
        "no temporary file stays behind"
    );
}

#[test]
fn identical_files_are_left_alone_and_others_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "A\n").unwrap();
    std::fs::write(dir.path().join("firenze.yaml"), "F\n").unwrap();
    std::fs::write(dir.path().join("README.md"), "R\n").unwrap();
    let before = std::fs::metadata(dir.path().join("a.yaml"))
        .unwrap()
        .modified()
        .unwrap();
    let plan = out_dir::plan(dir.path(), manifests(&[("a", "A\n"), ("b", "B\n")]), false).unwrap();
    assert_eq!(plan.files[0].action, Action::Unchanged);
    assert_eq!(plan.files[1].action, Action::Create);
    let summary = out_dir::write(&plan).unwrap();
    assert_eq!(
        summary.to_string(),
        "1 created, 0 replaced, 1 unchanged; 1 other manifest already there and not in \
         this run, left as it was"
    );
    let after = std::fs::metadata(dir.path().join("a.yaml"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "an unchanged file is not rewritten");
    assert_eq!(files(dir.path())["firenze.yaml"], "F\n");
}

#[test]
fn different_files_are_refused_together_and_nothing_is_written_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "edited in git\n").unwrap();
    std::fs::write(dir.path().join("c.yaml"), "edited too\n").unwrap();
    let wanted = manifests(&[("a", "A\n"), ("b", "B\n"), ("c", "C\n")]);
    let error = out_dir::plan(dir.path(), wanted.clone(), false).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("2 files already exist with other content, nothing was written:"),
        "{message}"
    );
    assert!(
        message.contains("a.yaml") && message.contains("c.yaml") && message.contains("--force")
    );
    assert_eq!(
        files(dir.path()).len(),
        2,
        "b.yaml was not written: {:?}",
        files(dir.path())
    );

    let plan = out_dir::plan(dir.path(), wanted, true).unwrap();
    assert_eq!(
        out_dir::write(&plan).unwrap().to_string(),
        "1 created, 2 replaced, 0 unchanged"
    );
    assert_eq!(
        files(dir.path()),
        BTreeMap::from([
            ("a.yaml".into(), "A\n".into()),
            ("b.yaml".into(), "B\n".into()),
            ("c.yaml".into(), "C\n".into()),
        ])
    );
}

#[test]
fn a_file_in_place_of_the_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants");
    std::fs::write(&file, "").unwrap();
    assert!(matches!(
        out_dir::plan(&file, manifests(&[("a", "A\n")]), false),
        Err(out_dir::Error::NotADirectory(_))
    ));
}
