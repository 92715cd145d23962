//! The ingredients and classes of medicine the check knows, and how a medicine or an allergy as
//! recorded is read as them.
//!
//! Small and explicit on purpose: each ingredient is listed with the words that name it (its
//! international name, the UK or US name where they differ, a few obvious brand names), the
//! classes it belongs to, and the codes that name it. A record names a medicine by code
//! (RxNorm, SNOMED CT) or in words ("Naproxen sodium 220 MG Oral Tablet"); [`resolve`] takes
//! both and returns every ingredient and class it finds. Words are matched whole, lowercase,
//! so "aspirin" does not match inside another word, and a phrase ("mefenamic acid") matches
//! only as consecutive words.
//!
//! The codes are few and chosen with care. RxNorm ingredient codes (RxCUIs) of the common
//! ingredients, and the RxNorm product codes met in the shared Synthea fixtures, whose display
//! names the ingredient (`849574` "Naproxen sodium 220 MG Oral Tablet"). SNOMED CT substance
//! codes where they are well attested, and the two allergy codes records use most for
//! penicillin. dm+d codes are not listed: phr does not ship the dm+d, and a dm+d medicine is
//! still matched by its name. An ingredient or class without a code here is matched by name.

use std::{collections::BTreeSet, sync::OnceLock};

/// The RxNorm code system.
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
/// The SNOMED CT code system.
pub const SNOMED: &str = "http://snomed.info/sct";

/// One active ingredient.
#[derive(Debug)]
pub struct Ingredient {
    /// Its name in the table: the international non-proprietary name, lowercase.
    pub name: &'static str,
    /// Other words and phrases that name it in a record: synonyms, brand names.
    pub words: &'static [&'static str],
    /// The classes it belongs to (names from [`CLASSES`]).
    pub classes: &'static [&'static str],
    /// RxNorm codes: the ingredient's own, and products that contain it.
    pub rxnorm: &'static [&'static str],
    /// SNOMED CT codes of the substance (or of an allergy to it).
    pub snomed: &'static [&'static str],
}

/// A class of medicines, such as the NSAIDs.
#[derive(Debug)]
pub struct Class {
    /// Its name in the table, lowercase with hyphens.
    pub name: &'static str,
    /// How a patient reads it.
    pub shown: &'static str,
    /// Words that name the class itself in a record ("NSAIDs", "penicillin" as an allergy).
    pub words: &'static [&'static str],
    /// SNOMED CT codes of the class (or of an allergy to it).
    pub snomed: &'static [&'static str],
}

const fn class(
    name: &'static str,
    shown: &'static str,
    words: &'static [&'static str],
    snomed: &'static [&'static str],
) -> Class {
    Class {
        name,
        shown,
        words,
        snomed,
    }
}

/// Every class the check knows.
#[rustfmt::skip]
pub static CLASSES: &[Class] = &[
    // 372665008: Non-steroidal anti-inflammatory agent (substance).
    class("nsaids", "NSAIDs", &["nsaid", "nsaids", "non steroidal anti inflammatory", "nonsteroidal anti inflammatory"], &["372665008"]),
    // 373270004: Penicillin -class of antibiotic- (substance); 91936005: Allergy to penicillin.
    // A bare "penicillin" names the class: an allergy to penicillin is to all of them.
    class("penicillins", "penicillins", &["penicillin", "penicillins"], &["373270004", "91936005"]),
    class("cephalosporins", "cephalosporins", &["cephalosporin", "cephalosporins"], &[]),
    class("carbapenems", "carbapenems", &["carbapenem", "carbapenems"], &[]),
    class("macrolides", "macrolide antibiotics", &["macrolide", "macrolides"], &[]),
    class("statins", "statins", &["statin", "statins"], &[]),
    class("loop-diuretics", "loop diuretics", &["loop diuretic", "loop diuretics"], &[]),
    class("thiazides", "thiazide diuretics", &["thiazide", "thiazides"], &[]),
    class("potassium-sparing-diuretics", "potassium-sparing diuretics", &["potassium sparing diuretic", "potassium sparing diuretics"], &[]),
    class("beta-blockers", "beta blockers", &["beta blocker", "beta blockers"], &[]),
    class("ace-inhibitors", "ACE inhibitors", &["ace inhibitor", "ace inhibitors"], &[]),
    class("arbs", "angiotensin receptor blockers", &["angiotensin receptor blocker", "angiotensin receptor blockers"], &[]),
    class("anticoagulants", "anticoagulants", &["anticoagulant", "anticoagulants"], &[]),
    class("opioids", "opioid painkillers", &["opioid", "opioids", "opiate", "opiates"], &[]),
    class("benzodiazepines", "benzodiazepines", &["benzodiazepine", "benzodiazepines"], &[]),
    class("ssris", "SSRI antidepressants", &["ssri", "ssris"], &[]),
    class("maois", "MAOI antidepressants", &["maoi", "maois", "monoamine oxidase inhibitor"], &[]),
    class("triptans", "triptans", &["triptan", "triptans"], &[]),
    class("proton-pump-inhibitors", "proton pump inhibitors", &["proton pump inhibitor", "proton pump inhibitors"], &[]),
    class("pde5-inhibitors", "PDE5 inhibitors", &["pde5 inhibitor", "pde5 inhibitors"], &[]),
    // No words: "nitrate" alone also names things that are no angina medicine (silver nitrate).
    class("nitrates", "nitrates", &[], &[]),
    // Strong inhibitors of the liver enzyme CYP1A2, as the tizanidine row of the ONC list has them.
    class("cyp1a2-inhibitors", "strong CYP1A2 inhibitors", &[], &[]),
];

const fn ingredient(
    name: &'static str,
    words: &'static [&'static str],
    classes: &'static [&'static str],
    rxnorm: &'static [&'static str],
    snomed: &'static [&'static str],
) -> Ingredient {
    Ingredient {
        name,
        words,
        classes,
        rxnorm,
        snomed,
    }
}

/// Every ingredient the check knows, grouped by class.
#[rustfmt::skip]
pub static INGREDIENTS: &[Ingredient] = &[
    // NSAIDs. RxNorm 849574 "Naproxen sodium 220 MG Oral Tablet" is in the fixtures.
    ingredient("ibuprofen", &["advil", "nurofen", "motrin", "brufen"], &["nsaids"], &["5640"], &["387207008"]),
    ingredient("naproxen", &["naprosyn", "aleve"], &["nsaids"], &["7258", "849574"], &["372588000"]),
    ingredient("diclofenac", &["voltarol", "voltaren"], &["nsaids"], &["3355"], &[]),
    ingredient("aspirin", &["acetylsalicylic acid"], &["nsaids"], &["1191"], &["387458008"]),
    ingredient("celecoxib", &["celebrex"], &["nsaids"], &[], &[]),
    ingredient("etoricoxib", &["arcoxia"], &["nsaids"], &[], &[]),
    ingredient("indometacin", &["indomethacin"], &["nsaids"], &[], &[]),
    ingredient("meloxicam", &[], &["nsaids"], &[], &[]),
    ingredient("mefenamic acid", &[], &["nsaids"], &[], &[]),
    ingredient("ketoprofen", &[], &["nsaids"], &[], &[]),
    // Penicillins. RxNorm 834061 and 834102 "Penicillin V Potassium 250/500 MG Oral Tablet".
    ingredient("phenoxymethylpenicillin", &["penicillin v"], &["penicillins"], &["834061", "834102"], &[]),
    ingredient("benzylpenicillin", &["penicillin g"], &["penicillins"], &[], &[]),
    // Co-amoxiclav is amoxicillin with clavulanic acid; "co-amoxiclav" is read as two words.
    ingredient("amoxicillin", &["amoxycillin", "amoxil", "amoxiclav", "augmentin"], &["penicillins"], &["723"], &[]),
    ingredient("ampicillin", &[], &["penicillins"], &[], &[]),
    ingredient("flucloxacillin", &[], &["penicillins"], &[], &[]),
    ingredient("piperacillin", &[], &["penicillins"], &[], &[]),
    ingredient("cefalexin", &["cephalexin", "keflex"], &["cephalosporins"], &[], &[]),
    ingredient("cefuroxime", &[], &["cephalosporins"], &[], &[]),
    ingredient("ceftriaxone", &[], &["cephalosporins"], &[], &[]),
    ingredient("cefaclor", &[], &["cephalosporins"], &[], &[]),
    ingredient("cefradine", &["cephradine"], &["cephalosporins"], &[], &[]),
    ingredient("cefixime", &[], &["cephalosporins"], &[], &[]),
    ingredient("cefazolin", &["cefazoline"], &["cephalosporins"], &[], &[]),
    ingredient("meropenem", &[], &["carbapenems"], &[], &[]),
    ingredient("imipenem", &[], &["carbapenems"], &[], &[]),
    ingredient("ertapenem", &[], &["carbapenems"], &[], &[]),
    ingredient("clarithromycin", &["klaricid", "biaxin"], &["macrolides"], &["21212"], &[]),
    ingredient("erythromycin", &[], &["macrolides"], &[], &[]),
    ingredient("azithromycin", &["zithromax"], &["macrolides"], &[], &[]),
    ingredient("trimethoprim", &[], &[], &[], &[]),
    ingredient("ciprofloxacin", &["ciproxin", "cipro"], &["cyp1a2-inhibitors"], &[], &[]),
    ingredient("itraconazole", &["sporanox"], &[], &[], &[]),
    ingredient("ketoconazole", &[], &[], &[], &[]),
    // Statins. RxNorm 316672 is shown as "Simvistatin 10 MG" in the fixtures: the misspelling
    // is Synthea's, and real records copy such typos, so it is listed deliberately.
    ingredient("simvastatin", &["zocor", "simvistatin"], &["statins"], &["36567", "316672"], &[]),
    ingredient("atorvastatin", &["lipitor"], &["statins"], &["83367"], &[]),
    ingredient("rosuvastatin", &["crestor"], &["statins"], &[], &[]),
    ingredient("pravastatin", &[], &["statins"], &[], &[]),
    ingredient("gemfibrozil", &[], &[], &[], &[]),
    ingredient("ciclosporin", &["cyclosporine", "cyclosporin"], &[], &[], &[]),
    // Diuretics. RxNorm 315971 is shown as "Lasix 40mg" and 1719286 as "10 ML Furosemide
    // 10 MG/ML Injection" in the fixtures; 316049 "Hydrochlorothiazide 25 MG".
    ingredient("furosemide", &["frusemide", "lasix"], &["loop-diuretics"], &["4603", "315971", "1719286"], &[]),
    ingredient("bumetanide", &[], &["loop-diuretics"], &[], &[]),
    ingredient("torasemide", &["torsemide"], &["loop-diuretics"], &[], &[]),
    ingredient("hydrochlorothiazide", &[], &["thiazides"], &["5487", "316049"], &[]),
    ingredient("bendroflumethiazide", &["bendrofluazide"], &["thiazides"], &[], &[]),
    ingredient("indapamide", &[], &["thiazides"], &[], &[]),
    ingredient("chlortalidone", &["chlorthalidone"], &["thiazides"], &[], &[]),
    ingredient("spironolactone", &["aldactone"], &["potassium-sparing-diuretics"], &["9997"], &[]),
    ingredient("eplerenone", &[], &["potassium-sparing-diuretics"], &[], &[]),
    ingredient("amiloride", &[], &["potassium-sparing-diuretics"], &[], &[]),
    ingredient("triamterene", &[], &["potassium-sparing-diuretics"], &[], &[]),
    // Blood pressure and heart. RxNorm 866414 "24 HR metoprolol succinate 100 MG Extended
    // Release Oral Tablet [Toprol]" is in the fixtures.
    ingredient("metoprolol", &["toprol", "lopresor", "lopressor", "betaloc"], &["beta-blockers"], &["6918", "866414"], &[]),
    ingredient("atenolol", &["tenormin"], &["beta-blockers"], &[], &[]),
    ingredient("bisoprolol", &[], &["beta-blockers"], &[], &[]),
    ingredient("propranolol", &[], &["beta-blockers"], &[], &[]),
    ingredient("carvedilol", &[], &["beta-blockers"], &[], &[]),
    ingredient("lisinopril", &["zestril"], &["ace-inhibitors"], &["29046"], &[]),
    ingredient("ramipril", &[], &["ace-inhibitors"], &[], &[]),
    ingredient("enalapril", &[], &["ace-inhibitors"], &[], &[]),
    ingredient("perindopril", &[], &["ace-inhibitors"], &[], &[]),
    ingredient("captopril", &[], &["ace-inhibitors"], &[], &[]),
    ingredient("losartan", &[], &["arbs"], &[], &[]),
    ingredient("candesartan", &[], &["arbs"], &[], &[]),
    ingredient("valsartan", &[], &["arbs"], &[], &[]),
    ingredient("irbesartan", &[], &["arbs"], &[], &[]),
    ingredient("amlodipine", &["istin", "norvasc"], &[], &[], &[]),
    ingredient("diltiazem", &[], &[], &[], &[]),
    ingredient("verapamil", &[], &[], &[], &[]),
    ingredient("amiodarone", &[], &[], &[], &[]),
    ingredient("glyceryl trinitrate", &["nitroglycerin", "nitroglycerine", "gtn"], &["nitrates"], &[], &[]),
    ingredient("isosorbide mononitrate", &[], &["nitrates"], &[], &[]),
    ingredient("isosorbide dinitrate", &[], &["nitrates"], &[], &[]),
    ingredient("sildenafil", &["viagra"], &["pde5-inhibitors"], &[], &[]),
    ingredient("tadalafil", &["cialis"], &["pde5-inhibitors"], &[], &[]),
    ingredient("vardenafil", &[], &["pde5-inhibitors"], &[], &[]),
    // Blood thinners.
    ingredient("warfarin", &["coumadin", "marevan"], &["anticoagulants"], &["11289"], &["372756006"]),
    ingredient("apixaban", &["eliquis"], &["anticoagulants"], &[], &[]),
    ingredient("rivaroxaban", &["xarelto"], &["anticoagulants"], &[], &[]),
    ingredient("edoxaban", &[], &["anticoagulants"], &[], &[]),
    ingredient("dabigatran", &["pradaxa"], &["anticoagulants"], &[], &[]),
    ingredient("clopidogrel", &["plavix"], &[], &[], &[]),
    ingredient("omeprazole", &["losec", "prilosec"], &["proton-pump-inhibitors"], &[], &[]),
    ingredient("esomeprazole", &["nexium"], &["proton-pump-inhibitors"], &[], &[]),
    ingredient("lansoprazole", &[], &["proton-pump-inhibitors"], &[], &[]),
    ingredient("pantoprazole", &[], &["proton-pump-inhibitors"], &[], &[]),
    ingredient("rabeprazole", &[], &["proton-pump-inhibitors"], &[], &[]),
    ingredient("atazanavir", &["reyataz"], &[], &[], &[]),
    // Pain. RxNorm 1049221 "Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG Oral Tablet",
    // 1310197 "Acetaminophen 300 MG / HYDROcodone Bitartrate 5 MG [Vicodin]" and 1860154
    // "Abuse-Deterrent 12 HR Oxycodone Hydrochloride 15 MG ..." are in the fixtures.
    // Co-codamol is codeine with paracetamol, co-dydramol dihydrocodeine with paracetamol.
    ingredient("paracetamol", &["acetaminophen", "tylenol", "codamol", "dydramol", "vicodin", "percocet"], &[], &["161", "313782", "1049221", "1310197", "1043400"], &[]),
    ingredient("codeine", &["codamol"], &["opioids"], &[], &[]),
    ingredient("dihydrocodeine", &["dydramol"], &["opioids"], &[], &[]),
    ingredient("morphine", &[], &["opioids"], &[], &[]),
    ingredient("oxycodone", &["oxycontin", "percocet"], &["opioids"], &["1049221", "1860154"], &[]),
    ingredient("hydrocodone", &["vicodin"], &["opioids"], &["1310197"], &[]),
    ingredient("tramadol", &[], &["opioids"], &[], &[]),
    ingredient("fentanyl", &[], &["opioids"], &[], &[]),
    ingredient("methadone", &[], &["opioids"], &[], &[]),
    ingredient("buprenorphine", &[], &["opioids"], &[], &[]),
    ingredient("tapentadol", &[], &["opioids"], &[], &[]),
    ingredient("diazepam", &["valium"], &["benzodiazepines"], &[], &[]),
    ingredient("lorazepam", &["ativan"], &["benzodiazepines"], &[], &[]),
    ingredient("alprazolam", &["xanax"], &["benzodiazepines"], &[], &[]),
    ingredient("clonazepam", &[], &["benzodiazepines"], &[], &[]),
    ingredient("temazepam", &[], &["benzodiazepines"], &[], &[]),
    ingredient("nitrazepam", &[], &["benzodiazepines"], &[], &[]),
    ingredient("chlordiazepoxide", &[], &["benzodiazepines"], &[], &[]),
    ingredient("midazolam", &[], &["benzodiazepines"], &[], &[]),
    ingredient("tizanidine", &[], &[], &[], &[]),
    ingredient("sumatriptan", &["imigran"], &["triptans"], &[], &[]),
    ingredient("rizatriptan", &[], &["triptans"], &[], &[]),
    ingredient("zolmitriptan", &[], &["triptans"], &[], &[]),
    // Mental health.
    ingredient("sertraline", &["lustral", "zoloft"], &["ssris"], &["36437"], &[]),
    ingredient("fluoxetine", &["prozac"], &["ssris"], &[], &[]),
    ingredient("citalopram", &[], &["ssris"], &[], &[]),
    ingredient("escitalopram", &[], &["ssris"], &[], &[]),
    ingredient("paroxetine", &[], &["ssris"], &[], &[]),
    ingredient("fluvoxamine", &[], &["ssris", "cyp1a2-inhibitors"], &[], &[]),
    ingredient("phenelzine", &[], &["maois"], &[], &[]),
    ingredient("tranylcypromine", &[], &["maois"], &[], &[]),
    ingredient("isocarboxazid", &[], &["maois"], &[], &[]),
    ingredient("moclobemide", &[], &["maois"], &[], &[]),
    ingredient("lithium", &["priadel", "camcolit"], &[], &[], &[]),
    ingredient("methotrexate", &[], &[], &[], &[]),
    // Medicines in the fixtures that no row of the shipped table names: known, so that the check
    // can say they were checked rather than not recognised.
    ingredient("fexofenadine", &["allegra", "telfast"], &[], &["997488"], &[]),
    ingredient("adrenaline", &["epinephrine", "epipen"], &[], &["1870230"], &[]),
    ingredient("leuprorelin", &["leuprolide"], &[], &["752899"], &[]),
    ingredient("docetaxel", &[], &[], &["1860480"], &[]),
    ingredient("paclitaxel", &[], &[], &["583214"], &[]),
    ingredient("cisplatin", &[], &[], &["1736854"], &[]),
    ingredient("dextromethorphan", &[], &[], &["1043400"], &[]),
    ingredient("doxylamine", &[], &[], &["1043400"], &[]),
    ingredient("anastrozole", &["arimidex"], &[], &[], &["108774000"]),
];

/// The ingredient named `name` (its table name, not a synonym).
pub fn ingredient_named(name: &str) -> Option<&'static Ingredient> {
    INGREDIENTS.iter().find(|i| i.name == name)
}

/// The class named `name`.
pub fn class_named(name: &str) -> Option<&'static Class> {
    CLASSES.iter().find(|c| c.name == name)
}

/// What a term of a table row names, once looked up: an ingredient (by its table name or any of
/// its words) or a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// An ingredient, by its table name.
    Ingredient(&'static str),
    /// A class, by its name.
    Class(&'static str),
}

/// Looks a name up as a class name, an ingredient name, or one of the words of an ingredient
/// or of a class.
pub fn lookup(name: &str) -> Option<Known> {
    if let Some(class) = class_named(name) {
        return Some(Known::Class(class.name));
    }
    if let Some(ingredient) = ingredient_named(name) {
        return Some(Known::Ingredient(ingredient.name));
    }
    let wanted = words(name);
    phrases()
        .iter()
        .find(|(phrase, _)| *phrase == wanted)
        .map(|(_, known)| *known)
}

/// Every phrase that names an ingredient (its name, then its words) or a class (its words), as
/// lowercase words, with what it names: ingredients first, in the order of [`INGREDIENTS`].
/// Made once.
fn phrases() -> &'static [(Vec<String>, Known)] {
    static PHRASES: OnceLock<Vec<(Vec<String>, Known)>> = OnceLock::new();
    PHRASES.get_or_init(|| {
        let mut out = Vec::new();
        for ingredient in INGREDIENTS {
            for name in std::iter::once(&ingredient.name).chain(ingredient.words) {
                out.push((words(name), Known::Ingredient(ingredient.name)));
            }
        }
        for class in CLASSES {
            for word in class.words {
                out.push((words(word), Known::Class(class.name)));
            }
        }
        out
    })
}

/// The ingredient names an imported table adds, each with its words: made once per check, as
/// a table may add thousands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtraNames(Vec<(String, Vec<String>)>);

impl ExtraNames {
    /// The names, each read as words.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        ExtraNames(
            names
                .into_iter()
                .map(|name| {
                    let said = words(&name);
                    (name, said)
                })
                .collect(),
        )
    }
}

/// What a medicine or an allergy names, read by [`resolve`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Ingredients, by table name (an imported table may add names of its own).
    pub ingredients: BTreeSet<String>,
    /// Classes: those of the ingredients, and any named directly ("allergy to NSAIDs").
    pub classes: BTreeSet<&'static str>,
}

impl Resolved {
    /// Whether nothing was recognised.
    pub fn is_empty(&self) -> bool {
        self.ingredients.is_empty() && self.classes.is_empty()
    }
}

/// Reads `texts` (what the record says in words) and `codes` (system, code) as ingredients and
/// classes. `extra` are names an imported table uses that the vocabulary does not know; they
/// match as words too.
pub fn resolve<'a>(
    texts: impl IntoIterator<Item = &'a str>,
    codes: impl IntoIterator<Item = (&'a str, &'a str)>,
    extra: &ExtraNames,
) -> Resolved {
    let mut found = Resolved::default();
    let add = |ingredient: &'static Ingredient, found: &mut Resolved| {
        found.ingredients.insert(ingredient.name.to_string());
        found.classes.extend(ingredient.classes.iter().copied());
    };
    for (system, code) in codes {
        for ingredient in INGREDIENTS {
            let listed = match system {
                RXNORM => ingredient.rxnorm,
                SNOMED => ingredient.snomed,
                _ => &[],
            };
            if listed.contains(&code) {
                add(ingredient, &mut found);
            }
        }
        if system == SNOMED {
            let classes = CLASSES.iter().filter(|c| c.snomed.contains(&code));
            found.classes.extend(classes.map(|c| c.name));
        }
    }
    for text in texts {
        let said = words(text);
        for (phrase, known) in phrases() {
            if !contains_phrase(&said, phrase) {
                continue;
            }
            match known {
                Known::Ingredient(name) => add(
                    ingredient_named(name).expect("a phrase names a listed ingredient"),
                    &mut found,
                ),
                Known::Class(name) => {
                    found.classes.insert(name);
                }
            }
        }
        for (name, phrase) in &extra.0 {
            if contains_phrase(&said, phrase) {
                found.ingredients.insert(name.clone());
            }
        }
    }
    found
}

/// `text` lowercased and split into words of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn contains_phrase(said: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && said.windows(phrase.len()).any(|window| window == phrase)
}
