//! What the models read, as pure string functions of an example's instruction and input.
//!
//! - T5 reads `instruction + input` and is trained to produce `output` (plus EOS).
//! - LLaMA reads the Alpaca prompt below and is trained on the response (`output`) only.

/// First paragraph of the Alpaca prompt (the template with an input).
pub const ALPACA_PREAMBLE: &str = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.";

/// The T5 source text: the instruction followed by the input.
///
/// For the `kif` tasks this is exactly `instruction + input` (their instructions end in a
/// line break), the `*_T5.json` text of the reference. A SuperNI definition does not end
/// in whitespace; there a `\n` goes between the two so that they do not run together.
pub fn t5_source(instruction: &str, input: &str) -> String {
    let needs_break = instruction
        .chars()
        .next_back()
        .is_some_and(|last| !last.is_whitespace());
    let separator = if needs_break { "\n" } else { "" };
    format!("{instruction}{separator}{input}")
}

/// The LLaMA prompt: the Alpaca template with an input, ending in `### Response:\n`; the
/// target (`output`) follows it directly.
pub fn alpaca_prompt(instruction: &str, input: &str) -> String {
    format!(
        "{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTRUCTION: &str = "What is the topic of the following paragraph? Choose one from the option. Option: World, Sports, Business, Science or Technology.\n";
    const INPUT: &str = "Title: Jury Rules for Kodak\nText: Eastman Kodak Co. won\n\nAnswer:";

    #[test]
    fn t5_source_is_instruction_then_input() {
        assert_eq!(
            t5_source(INSTRUCTION, INPUT),
            "What is the topic of the following paragraph? Choose one from the option. \
             Option: World, Sports, Business, Science or Technology.\nTitle: Jury Rules for \
             Kodak\nText: Eastman Kodak Co. won\n\nAnswer:"
        );
    }

    #[test]
    fn t5_source_separates_an_instruction_without_trailing_break() {
        assert_eq!(
            t5_source("Classify the tweet.", "so happy"),
            "Classify the tweet.\nso happy"
        );
        assert_eq!(t5_source("", "so happy"), "so happy");
    }

    #[test]
    fn alpaca_prompt_matches_the_reference_template() {
        // The template as the data README gives it, written out by hand.
        let expected = "Below is an instruction that describes a task, paired with an input \
                        that provides further context. Write a response that appropriately \
                        completes the request.\n\n### Instruction:\nWhat is the topic of the \
                        following paragraph? Choose one from the option. Option: World, \
                        Sports, Business, Science or Technology.\n\n\n### Input:\nTitle: Jury \
                        Rules for Kodak\nText: Eastman Kodak Co. won\n\nAnswer:\n\n### \
                        Response:\n";
        assert_eq!(alpaca_prompt(INSTRUCTION, INPUT), expected);
    }
}
