"""GPT-1's fine-tuning heads: classification from the last real token, multiple choice, auxiliary LM loss."""

import pytest
import torch

from gpt1 import GPT1ForCausalLM, GPT1ForMultipleChoice, GPT1ForSequenceClassification

from .helpers import tiny_config


def classifier(**overrides):
    torch.manual_seed(0)
    sizes = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, classifier_dropout=0.0, pad_token_id=0)
    sizes.update(overrides)
    return GPT1ForSequenceClassification(tiny_config(**sizes)).eval()


def ids_of(*rows):
    return torch.tensor(rows)


def test_classifies_from_last_real_token_for_any_padding():
    model = classifier(num_labels=3)
    tokens = [5, 9, 17, 3, 8]
    alone = model(ids_of(tokens)).logits
    right = model(ids_of(tokens + [0, 0]), attention_mask=ids_of([1] * 5 + [0, 0])).logits
    left = model(ids_of([0, 0] + tokens), attention_mask=ids_of([0, 0] + [1] * 5)).logits
    right_by_pad_id = model(ids_of(tokens + [0, 0], [4, 4, 4, 4, 4, 4, 4])).logits[:1]
    assert alone.shape == (1, 3)
    for logits in (right, left, right_by_pad_id):
        torch.testing.assert_close(logits, alone, atol=1e-5, rtol=1e-5)
    # It really is the last token's state passed through the classifier.
    hidden = model.transformer(ids_of(tokens)).last_hidden_state[:, -1]
    torch.testing.assert_close(alone, model.classifier(hidden))


def test_head_shares_the_pretrained_lm_weights(tmp_path):
    lm = GPT1ForCausalLM(tiny_config())
    lm.save_pretrained(tmp_path)
    model = GPT1ForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    torch.testing.assert_close(
        model.transformer.blocks[1].mlp.up_proj.weight, lm.transformer.blocks[1].mlp.up_proj.weight
    )
    assert model.lm_head.weight.data_ptr() == model.transformer.token_embeddings.weight.data_ptr()


def lm_loss_of(model, ids, mask):
    """OpenAI's definition: each sequence's mean token loss, then the mean over sequences."""
    logits = model.lm_head(model.transformer(ids, attention_mask=mask).last_hidden_state)
    per_sequence = []
    for row_logits, row_ids, row_mask in zip(logits, ids, mask, strict=True):
        length = int(row_mask.sum())
        per_sequence.append(torch.nn.functional.cross_entropy(row_logits[: length - 1], row_ids[1:length]))
    return torch.stack(per_sequence).mean()


def test_single_label_loss_adds_weighted_auxiliary_lm_loss():
    model = classifier(num_labels=3, auxiliary_lm_loss_weight=0.5)
    ids, mask = ids_of([5, 9, 17, 3], [6, 2, 0, 0]), ids_of([1, 1, 1, 1], [1, 1, 0, 0])
    labels = torch.tensor([2, 0])
    outputs = model(ids, attention_mask=mask, labels=labels)
    task = torch.nn.functional.cross_entropy(outputs.logits, labels)
    torch.testing.assert_close(outputs.loss, task + 0.5 * lm_loss_of(model, ids, mask))
    # Rows of 4 and 2 tokens: a token-level mean would weigh the long row 3:1, not 1:1.
    token_mean = 0.5 * torch.nn.functional.cross_entropy(
        model.lm_head(model.transformer(ids, attention_mask=mask).last_hidden_state)[:, :-1].reshape(-1, 96),
        ids.masked_fill(mask == 0, -100)[:, 1:].reshape(-1),
    )
    assert not torch.allclose(outputs.loss, task + token_mean)
    model.config.auxiliary_lm_loss_weight = 0.0
    torch.testing.assert_close(model(ids, attention_mask=mask, labels=labels).loss, task)
    assert model.config.problem_type == "single_label_classification"


def test_regression_and_multi_label_like_the_stock_heads():
    ids = ids_of([5, 9, 17, 3], [6, 2, 1, 8])
    regression = classifier(num_labels=1, auxiliary_lm_loss_weight=0.0)
    targets = torch.tensor([0.5, -1.0])
    outputs = regression(ids, labels=targets)
    torch.testing.assert_close(outputs.loss, torch.nn.functional.mse_loss(outputs.logits.squeeze(-1), targets))
    assert regression.config.problem_type == "regression"

    multi = classifier(num_labels=4, auxiliary_lm_loss_weight=0.0)
    multi_hot = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    outputs = multi(ids, labels=multi_hot)
    torch.testing.assert_close(
        outputs.loss, torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits, multi_hot)
    )
    assert multi.config.problem_type == "multi_label_classification"


def test_label_outside_num_labels_is_a_clear_error():
    model = classifier(num_labels=2)
    with pytest.raises(ValueError, match="class 5.*num_labels=2"):
        model(ids_of([5, 9, 17]), labels=torch.tensor([5]))


def test_multiple_choice_scores_each_choice_and_adds_lm_loss():
    torch.manual_seed(0)
    config = tiny_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, classifier_dropout=0.0, pad_token_id=0)
    model = GPT1ForMultipleChoice(config).eval()
    ids = torch.tensor([[[5, 9, 17, 3], [5, 9, 4, 0]], [[7, 7, 2, 0], [7, 7, 8, 11]], [[1, 2, 3, 4], [4, 3, 2, 1]]])
    mask = (ids != 0).long()
    labels = torch.tensor([1, 0, 1])
    outputs = model(ids, attention_mask=mask, labels=labels)
    assert outputs.logits.shape == (3, 2)
    # Each choice's score is the same as scoring that sequence on its own.
    single = model(ids[:1, 1:, :3], attention_mask=mask[:1, 1:, :3]).logits
    torch.testing.assert_close(outputs.logits[0, 1], single[0, 0], atol=1e-5, rtol=1e-5)
    flat_ids, flat_mask = ids.view(6, 4), mask.view(6, 4)
    expected = torch.nn.functional.cross_entropy(outputs.logits, labels) + 0.5 * lm_loss_of(model, flat_ids, flat_mask)
    torch.testing.assert_close(outputs.loss, expected)


def test_multiple_choice_rejects_flat_inputs_and_bad_labels():
    model = GPT1ForMultipleChoice(tiny_config()).eval()
    with pytest.raises(ValueError, match=r"\[batch, num_choices, seq\], got \(2, 4\)"):
        model(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="choice 3.*2 choices"):
        model(torch.ones(1, 2, 4, dtype=torch.long), labels=torch.tensor([3]))


def test_heads_train_end_to_end():
    model = classifier(num_labels=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = ids_of([5, 9, 17, 3], [6, 2, 1, 8], [5, 9, 17, 4], [6, 2, 1, 9])
    labels = torch.tensor([1, 0, 1, 0])
    first = None
    for _ in range(30):
        loss = model(ids, labels=labels).loss
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    assert model(ids).logits.argmax(-1).tolist() == labels.tolist()


def test_token_classification_pipeline_labels_every_token_from_its_logits():
    from transformers import pipeline

    from gpt1 import GPT1ForTokenClassification

    from .helpers import make_tokenizer

    tokenizer = make_tokenizer()
    labels = {0: "NOUN", 1: "VERB", 2: "OTHER"}  # no "O": the pipeline then reports every token
    torch.manual_seed(0)
    config = tiny_config(
        vocab_size=len(tokenizer), num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    model = GPT1ForTokenClassification(config).eval()
    text = "The trophy didn't fit in the suitcase"
    tagged = pipeline("token-classification", model=model, tokenizer=tokenizer)(text)

    encoding = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**encoding).logits.softmax(-1)[0]
    assert len(tagged) == encoding.input_ids.shape[1]
    for entity in tagged:
        index = entity["index"]
        assert entity["entity"] == labels[int(probabilities[index].argmax())]
        assert abs(entity["score"] - float(probabilities[index].max())) < 1e-5
        assert entity["word"] == tokenizer.convert_ids_to_tokens(int(encoding.input_ids[0, index]))


def test_token_classification_loss_ignores_minus_100_and_names_a_bad_label():
    from gpt1 import GPT1ForTokenClassification

    model = GPT1ForTokenClassification(tiny_config(num_labels=3, classifier_dropout=0.0)).eval()
    ids = ids_of([5, 9, 17, 3])
    labels = ids_of([0, 2, -100, 1])
    logits = model(ids).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[[0, 1, 3]], torch.tensor([0, 2, 1]))
    torch.testing.assert_close(model(ids, labels=labels).loss, expected)
    with pytest.raises(ValueError, match=r"labels contain class 7, but the model has num_labels=3"):
        model(ids, labels=ids_of([0, 7, 1, 1]))


def test_question_answering_head_loads_by_auto_class_and_finds_a_span_of_the_context(tmp_path):
    """transformers removed the question-answering pipeline in 5.3 (below this package's range), so the
    span is decoded here the way that pipeline did: the best start + end score over spans of the context."""
    from transformers import AutoModelForQuestionAnswering

    from gpt1 import GPT1ForQuestionAnswering

    from .helpers import make_tokenizer

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    GPT1ForQuestionAnswering(tiny_config(vocab_size=len(tokenizer))).save_pretrained(tmp_path)
    model = AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    assert isinstance(model, GPT1ForQuestionAnswering)
    question, context = "What did not fit?", "The trophy didn't fit in the suitcase because it was too big."
    # The question first: a decoder's context tokens can then attend to it.
    encoding = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(encoding.input_ids, attention_mask=encoding.attention_mask)
    assert outputs.start_logits.shape == outputs.end_logits.shape == encoding.input_ids.shape
    in_context = [index for index, sequence in enumerate(encoding.sequence_ids()) if sequence == 1]
    start, end = max(
        ((first, last) for first in in_context for last in in_context if first <= last < first + 6),
        key=lambda span: float(outputs.start_logits[0, span[0]] + outputs.end_logits[0, span[1]]),
    )
    offsets = encoding.offset_mapping[0]  # character offsets within the context, for its tokens
    answer = context[int(offsets[start][0]) : int(offsets[end][1])]
    assert answer.strip() == tokenizer.decode(encoding.input_ids[0, start : end + 1]).strip() != ""


def test_question_answering_loss_is_the_mean_of_start_and_end_cross_entropy():
    from gpt1 import GPT1ForQuestionAnswering

    model = GPT1ForQuestionAnswering(tiny_config()).eval()
    ids = ids_of([5, 9, 17, 3, 8], [4, 6, 2, 7, 1])
    starts, ends = torch.tensor([1, 0]), torch.tensor([3, 2])
    outputs = model(ids, start_positions=starts, end_positions=ends)
    expected = (
        torch.nn.functional.cross_entropy(outputs.start_logits, starts)
        + torch.nn.functional.cross_entropy(outputs.end_logits, ends)
    ) / 2
    torch.testing.assert_close(outputs.loss, expected)
